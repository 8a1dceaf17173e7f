"""``hvit-export --precision auto``: export every rung of each format's ladder, time them in one run, pick.

Each precision the format's runtime has a rung for (:data:`hvit_deploy.export.ladder.RUNGS`; built here per
:func:`.ladder.plan_rungs`) is exported into ``--out`` the way ``hvit-export --precision P`` does it (INT8 with
its accuracy gate and fallback: an artifact that fails the gate is not written, and its manifest failure says
why). The artifacts written are then timed as they are, without exporting again, in ONE ``hvit-bench`` run
(:class:`.runner.Runner` with ``artifacts``): the rungs of one model are the entries of one group, interleaved
round by round over several processes. The ladders (:func:`.ladder.build_ladders`) go into the manifest's
``ladders`` and the run's results into ``DIR/ladder-results.json``.

The export layer cannot import hvit-bench, so this orchestration lives here (bench may import export).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import HvitError
from ..export.ladder import Ladder, runtime_of_format
from . import artifacts
from .ladder import build_ladders, plan_rungs

RESULTS = "ladder-results.json"
PROFILE = "ladder"


def rung_precisions(formats: list[str], calibration: bool) -> dict[str, list[str]]:
    """precision -> the formats whose runtime builds a rung of it here, FP32 first."""
    out: dict[str, list[str]] = {}
    for fmt in formats:
        for r in plan_rungs(runtime_of_format(fmt), calibration=calibration)[0]:
            out.setdefault(r.precision, []).append(fmt)
    return out


def export_precisions() -> tuple[str, ...]:
    """The ``--precision`` words hvit-export takes (a rung of another precision, e.g. BF16 before hvit-export
    writes it, is exported by the timing run's own artifact cache, as hvit-bench does, and not into --out)."""
    from typing import get_args

    from ..export.request import ExportRequest

    return tuple(a for arg in get_args(ExportRequest.model_fields["precision"].annotation) for a in get_args(arg))


def _preset(entry: dict, out: Path) -> dict:
    """What the runner records of an artifact written by this export (as a cached ``bench-artifact.json``)."""
    path = Path(entry["path"])
    info = {"path": str(path if path.is_absolute() else out / path), "validation":
            artifacts.validation_figures(entry.get("validation")), "size_bytes": entry.get("size_bytes"),
            "rewrites": entry.get("rewrites", []), "exporter": entry.get("exporter"), "cached": False,
            "precision": entry.get("artifact_precision")}
    if entry.get("quantization"):
        info["quantization"] = artifacts.quantization_summary(entry)
    return info


def export_rungs(request, out: Path, say: Callable[[str], None], record: Callable[[dict], None]) -> dict:
    """Export every buildable rung of every format into ``out`` (``record(entry)`` after each); the presets for
    the runner: (model, format, form) -> artifact info, or the error that kept it from being written."""
    from ..export.request import plan
    from ..export.run import run_local

    from .ladder import rung_form

    rungs = {r.precision: r for fmt in request.formats
             for r in plan_rungs(runtime_of_format(fmt), calibration=bool(request.calibration))[0]}
    presets: dict = {}
    for precision, formats in rung_precisions(request.formats, bool(request.calibration)).items():
        if precision not in export_precisions():
            say(f"note: hvit-export has no --precision {precision}: the timing run exports that rung into its "
                "cache (not into --out)")
            continue
        sub = request.model_copy(update={"precision": precision, "formats": formats})
        say(f"--precision auto: the {precision} rung of {', '.join(formats)} ...")

        def keep(entry: dict, precision=precision) -> None:
            record(entry)
            key = (entry["model"], entry["format"], rung_form(entry["model"], rungs[precision]))
            if entry.get("status") == "ok" and entry.get("path"):
                presets[key] = _preset(entry, out)
            else:
                presets[key] = HvitError(f"{precision} export failed: {entry.get('error')}")
        run_local(sub, plan(sub), out, keep, say)
    return presets


def time_rungs(request, out: Path, presets: dict, *, threads: int | None, iterations: int | None,
               rounds: int | None, say: Callable[[str], None]) -> list[Ladder]:
    """Time the written rungs in one interleaved run; the ladders, also merged into ``out``'s manifest."""
    from ..export import update_manifest
    from .request import build_request
    from .runner import Runner

    calibration = bool(request.calibration)
    from .ladder import ladder_forms

    runtimes = [runtime_of_format(f) for f in request.formats]
    req = build_request(profile=PROFILE, models=request.models, plugins=request.plugins, out=out / RESULTS,
                        command="hvit-export --precision auto", backends=runtimes,
                        forms=ladder_forms(runtimes, request.models, calibration=calibration), threads=threads,
                        iterations=iterations, rounds=rounds, input_size=request.input_size,
                        calibration=request.calibration, eval_data=request.eval_data,
                        calibration_size=request.calibration_size)
    prof = req.profile
    say(f"--precision auto: timing {len(req.models)} model(s) × {len(runtimes)} runtime(s), every rung side by "
        f"side: {prof.iterations} runs each in {prof.rounds} interleaved rounds over {prof.processes} process(es), "
        f"{prof.threads} thread(s) (shorten with --iters, --rounds)")
    doc = Runner(req, progress=False, artifacts=presets, log=say).run().doc
    ladders = build_ladders(doc, runtimes, calibration=calibration, results=str(out / RESULTS))
    update_manifest(out, [], ladders)
    return ladders
