"""One ``hvit-bench`` run, validated once: :class:`BenchRequest`, built from the CLI or from Python.

:func:`build_request` turns what a user asked for (a profile name or file, flag overrides, models, checkpoints,
plugins) into a :class:`BenchRequest`: the resolved protocol (:class:`.profiles.Profile`), the canonical model
names and the files. :meth:`BenchRequest.jobs` is the one planner: the (model, form, runtime) entries, in the
order they are measured. The local runner (:class:`.runner.Runner`) executes them, and ``--cluster``
(:mod:`hvit_deploy.cluster.bench`) ships the same request, as JSON, to each node, where
``python -m hvit_deploy.bench.request REQUEST.json`` executes the same jobs::

    from hvit_deploy.bench.request import build_request
    from hvit_deploy.bench.runner import run

    req = build_request(profile="ci", models=["smt_t"], backends=["ort", "ov"], forms=["rewritten", "int8"],
                        calibration="calib/", out="smt.json")
    doc = run(req).doc          # a typed ResultsDoc
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..errors import HvitError
from .profiles import FORM_NAMES as FORMS  # the CLI's --variants values (the profile's ``variants`` key)
from .profiles import Profile


class JobSpec(NamedTuple):
    """One entry to measure (one batch size of a sweep)."""

    model: str
    form: str
    backend: str
    batch: int = 1


class BenchRequest(BaseModel):
    """A validated ``hvit-bench`` run: protocol, models, files, where results go."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    profile: Profile
    models: list[str] = Field(default_factory=list)           # canonical names
    checkpoints: dict[str, str] = Field(default_factory=dict)  # model -> weights file
    plugins: list[str] = Field(default_factory=list)          # files or modules imported first (and by workers)
    out: Optional[Path] = None
    command: str = ""
    against: Optional[Path] = None       # another checkout timed side by side (interleaved) with this one
    against_out: Optional[Path] = None

    @property
    def backends(self) -> list[str]:
        return list(self.profile.backends)

    @property
    def forms(self) -> list[str]:
        return list(self.profile.variants)

    @property
    def batches(self) -> list[int]:
        return list(self.profile.batch)

    def jobs(self) -> list[JobSpec]:
        """The planner: every (model, form, runtime, batch) entry, model by model, in the order they are
        measured (a runtime's batches one after another)."""
        return [JobSpec(model, form, backend, batch) for model in self.models for form in self.forms
                for backend in self.backends for batch in self.batches]


def default_models() -> list[str]:
    """The smallest variant (by parameter count) of every registered family."""
    from ..registry import get_spec, list_families, list_models

    picks = []
    for fam in list_families():
        names = list_models(fam)
        picks.append(min(names, key=lambda n: (get_spec(n).params or float("inf"), names.index(n))))
    return picks


def resolve_models(names: list[str] | None) -> list[str]:
    from ..registry import canonical_name

    if not names:
        return default_models()
    return list(dict.fromkeys(canonical_name(n) for n in names))  # UnknownModelError with suggestions


def resolve_backends(names: list[str]) -> list[str]:
    """Runtime names or their aliases (ort, ov, cuda, ...) as registered runtime names."""
    from ..runtimes import canonical_runtime

    return list(dict.fromkeys(canonical_runtime(n) for n in names))


def parse_checkpoints(items: list[str] | None, models: list[str]) -> dict[str, str]:
    """``--checkpoint`` values: ``MODEL=PATH``, or a bare path with one model."""
    from ..registry import canonical_name

    out: dict[str, str] = {}
    for item in items or []:
        if "=" in item and not Path(item).exists():
            m, path = item.split("=", 1)
            out[canonical_name(m)] = path
        elif len(models) == 1:
            out[models[0]] = item
        else:
            raise HvitError(f"--checkpoint {item}: with several models, write MODEL=PATH")
    for m, path in out.items():
        if not Path(path).is_file():
            raise HvitError(f"--checkpoint for {m}: no such file {path}")
    return out


def check_int8(prof: Profile, flags: list[str]) -> Profile:
    """The int8 form's data, checked before anything runs: a calibration folder when an int8 entry runs on
    onnxruntime/openvino-format runtimes; folders made absolute (the export process may run elsewhere);
    calibration flags without the int8 form are refused (a bf16 form takes --eval-data and --calibration, whose
    held-out split its gate uses)."""
    from . import profiles
    from .artifacts import NEEDS_CALIBRATION, runtime_format
    from ..quantize.calibration import find_images

    if "int8" not in prof.variants:
        gated = any(v in profiles.COMPUTE_FORMS for v in prof.variants)  # bf16 is gated on held-out images too
        wrong = [f for f in flags if not gated or f == "--calibration-size"]
        if wrong:
            raise HvitError(f"{wrong[0]} goes with --variants ... int8"
                            + ("" if wrong[0] == "--calibration-size" else " (or bf16: its gate's held-out images)"))
        if not gated:
            return prof
    needs = [b for b in prof.backends if runtime_format(b) in NEEDS_CALIBRATION]
    if "int8" in prof.variants and needs and not prof.calibration:
        raise HvitError(f"--variants int8 on {', '.join(needs)} needs calibration images: --calibration DIR "
                        "(or the profile's calibration field)")
    fields = {}
    for name, role in (("calibration", "calibration"), ("eval_data", "--eval-data")):
        folder = getattr(prof, name)
        if folder:
            find_images(folder, role)  # a missing or empty folder: one line now, not after the FP32 runs
            fields[name] = str(Path(folder).expanduser().resolve())
    return profiles.override(prof, **fields)


def resolve_profile(profile: str | Profile | None, *, forms: list[str] | None = None, no_rewrite: bool = False,
                    backends: list[str] | None = None, warmup: int | None = None, op_profile: bool = False,
                    **fields) -> Profile:
    """The profile (a name, a file or a :class:`Profile`) with the non-None overrides applied and checked."""
    from . import profiles

    prof = profile if isinstance(profile, Profile) else profiles.load_profile(profile)
    if no_rewrite and forms and forms != ["original"]:
        raise HvitError("--no-rewrite and --variants contradict each other; use one")
    forms = ["original"] if no_rewrite else forms
    if fields.get("processes") is None and fields.get("rounds") is not None and fields["rounds"] < prof.processes:
        fields["processes"] = fields["rounds"]  # fewer rounds than the profile's processes: one process per round
    int8_flags = [f"--{k.replace('_', '-')}" for k in ("calibration", "calibration_size", "eval_data")
                  if fields.get(k) is not None]
    prof = profiles.override(prof, backends=resolve_backends(backends) if backends else None, variants=forms,
                             **fields, **{"warmup.min_runs": warmup, "op_profile.enabled": True if op_profile else None})
    prof = check_int8(prof, int8_flags)
    if warmup is not None and prof.warmup.max_runs < prof.warmup.min_runs:
        prof = profiles.override(prof, **{"warmup.max_runs": prof.warmup.min_runs})
    return prof


def check_against(against: str | Path | None, against_out: str | Path | None, out: Path | None,
                  prof: Profile) -> tuple[Path | None, Path | None]:
    """``--against CHECKOUT`` (another hvit-deploy checkout) and where its results go."""
    from ..resources import package_parent

    if against is None:
        if against_out:
            raise HvitError("--against-out needs --against")
        return None, None
    root = Path(against).resolve()
    if not (root / "hvit_deploy" / "bench" / "worker.py").is_file():
        raise HvitError(f"--against {against}: not the root of an hvit-deploy checkout with hvit-bench "
                        "(no hvit_deploy/bench/worker.py there)")
    if root == package_parent().resolve():
        raise HvitError(f"--against {against} is this checkout; give another one")
    if prof.rounds < 2:
        raise HvitError("--against times the two checkouts in interleaved rounds: use --rounds 2 or more")
    if against_out is None and out is not None:
        against_out = out.with_name(f"{out.stem}-base{out.suffix}")
    return root, Path(against_out) if against_out else None


def build_request(*, profile: str | Profile | None = None, models: list[str] | None = None,
                  checkpoints: list[str] | None = None, plugins: list[str] | None = None,
                  out: str | Path | None = None, command: str = "", against: str | Path | None = None,
                  against_out: str | Path | None = None, **overrides) -> BenchRequest:
    """A :class:`BenchRequest` from what a user asked for (the ``hvit-bench`` flags, by their Python names:
    ``backends``, ``forms``, ``no_rewrite``, ``threads``, ``iterations``, ``rounds``, ``processes``,
    ``input_size``, ``batch`` (the sweep's sizes), ``timeout_s``, ``pair_block``, ``calibration``, ``calibration_size``, ``eval_data``,
    ``warmup``, ``op_profile``). Plugins are imported here (their models must resolve). Raises
    :class:`~hvit_deploy.errors.HvitError` with one line for bad input."""
    from . import plugins as plugin_mod

    prof = resolve_profile(profile, **overrides)
    plugin_list = plugin_mod.normalise(plugins or [])
    plugin_mod.load(plugin_list)
    names = resolve_models(models or prof.models)
    out = Path(out) if out else None
    against_root, against_file = check_against(against, against_out, out, prof)
    return BenchRequest(profile=prof, models=names, checkpoints=parse_checkpoints(checkpoints, names),
                        plugins=plugin_list, out=out, command=command, against=against_root,
                        against_out=against_file)


def main(argv: list[str] | None = None) -> int:
    """``python -m hvit_deploy.bench.request REQUEST.json``: run a request written by another process (each
    node of ``hvit-bench --cluster``); exit code as ``hvit-bench``'s."""
    from . import plugins as plugin_mod
    from .results import exit_code
    from .runner import Runner

    argv = sys.argv[1:] if argv is None else argv
    try:
        req = BenchRequest.model_validate_json(Path(argv[0]).read_text(encoding="utf-8"))
        plugin_mod.load(req.plugins)
        doc = Runner(req, progress=False).run().doc
    except (HvitError, OSError, ValueError) as e:  # one line, as hvit-bench gives it
        print(f"hvit-bench: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return exit_code(doc)


if __name__ == "__main__":
    sys.exit(main())
