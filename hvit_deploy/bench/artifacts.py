"""The artifact cache: exported models reused across runs, keyed by model, rewrites and tool versions.

Layout: ``$HVIT_CACHE_DIR/artifacts/<model>/<format>-<rewritten|original>-<key>/`` holding what the exporter
wrote plus ``bench-artifact.json`` (the key fields, the artifact path, export time, validation). The key is a
hash of everything that changes the exported file: model, format, rewrite names, input size, batch, precision,
checkpoint (path, size, mtime), the versions of torch/onnx/onnxsim/openvino/coremltools, and a digest of the
project's own source (models, rewrites, exporters, recipes), so editing a rewrite re-exports.

INT8 artifacts (form ``int8``) are exported the way ``hvit-export --precision int8`` does it (FP32 export,
quantization, accuracy gate, fallback) into ``<format>-<form>-int8-<key>/``; their key adds the calibration
folder's content digest, the calibration size, the held-out folder's digest and the recipe's ``quantization``
section, so another calibration set re-exports. The gate's figures, the layers kept in floating point and the
size ratio to FP32 go into ``bench-artifact.json`` and from there into the results entry.

Exporting happens in a child process (:mod:`.worker` ``export``), never in the timing worker: the timing
process imports only its runtime.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from pathlib import Path

from ..resources import package_dir, recipes_dir
from ..runtimes import get_runtime
from ..runtimes.torch_cpu import REWRITE_FORMAT as TORCH_REWRITE_FORMAT
from .environment import package_version
from .profiles import COMPUTE_FORMS

MANIFEST = "bench-artifact.json"

# The figures a results entry keeps of an artifact's check, named once: the FP32 export validation
# (hvit_deploy.metrics.Figures) and the INT8 accuracy gate (hvit_deploy.quantize.gate.gate_figures), whose
# figures an int8 artifact's manifest carries as its validation. Anything else (attempts, nested records) stays
# in the export manifest.
VALIDATION_FIGURES = ("passed", "ran", "reason", "inputs", "finite", "max_abs", "max_rel", "min_cosine", "top1",
                      "top5")
GATE_FIGURES = ("images", "finite", "mean_cosine", "min_cosine", "top1_agreement", "top5_agreement",
                "top1_agreement_within_tie", "top5_agreement_within_tie", "tie_margin", "near_tie_images",
                "eager_top1", "artifact_top1", "accuracy_drop")
KEPT_FIGURES = tuple(dict.fromkeys(VALIDATION_FIGURES + GATE_FIGURES))


def runtime_format(backend: str) -> str | None:
    """The export format a runtime times (None: the PyTorch module itself)."""
    return get_runtime(backend).format


def format_tools(fmt: str | None) -> tuple[str, ...]:
    """The tools whose version changes an artifact of ``fmt`` (the torch module: torch and timm)."""
    if fmt is None:
        return ("torch", "timm")
    from ..formats import get_format

    return get_format(fmt).tools


def cache_root() -> Path:
    root = os.environ.get("HVIT_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "hvit-deploy"


def source_digest() -> str:
    """sha256 of the files that shape an exported model: the project's models, rewrites, exporters and recipes
    (not the benchmark code itself), plus any --plugin files."""
    from .plugins import loaded_files

    return _source_digest(tuple(loaded_files))


@functools.lru_cache(maxsize=4)
def _source_digest(plugin_files: tuple[str, ...]) -> str:
    pkg = package_dir()
    h = hashlib.sha256()
    files = [p for p in sorted(pkg.rglob("*.py")) if not {"bench", "cli", "__pycache__"} & set(p.relative_to(pkg).parts)]
    files += sorted(recipes_dir().glob("*.yaml"))
    files += [Path(f) for f in plugin_files]
    for p in files:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        h.update(p.name.encode())
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def rewrite_names(model: str, fmt: str | None, rewrite: bool) -> list[str]:
    """The recipe's rewrites for ``model`` in ``fmt`` (empty for the original form)."""
    if not rewrite:
        return []
    from ..recipes import load_recipe
    from ..registry import get_spec

    spec = get_spec(model)
    return load_recipe(spec.family).rewrites_for(fmt or TORCH_REWRITE_FORMAT, spec.name)


def checkpoint_id(checkpoint: str | None) -> dict | None:
    if not checkpoint:
        return None
    p = Path(checkpoint).expanduser().resolve()
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p)}
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def artifact_key(model: str, fmt: str, *, rewrite: bool, rewrites: list[str], input_size: int | None,
                 batch_size: int = 1, precision: str = "fp32", checkpoint: str | None = None,
                 quantization: dict | None = None, dynamic_batch: bool = False) -> tuple[str, dict]:
    fields = {
        "model": model, "format": fmt, "rewrite": bool(rewrite), "rewrites": list(rewrites),
        "input_size": input_size, "batch_size": batch_size, "precision": precision,
        "checkpoint": checkpoint_id(checkpoint),
        "tools": {t: package_version(t) for t in format_tools(fmt)},
        "hvit_deploy": package_version("hvit-deploy"),
        "source": source_digest(),
    }
    if quantization is not None:  # only INT8 keys carry it, so every FP32 key stays what it was
        fields["quantization"] = quantization
    if dynamic_batch:  # the batch sweep's artifact (any batch); static keys stay what they were
        fields["dynamic_batch"] = True
    blob = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12], fields


# ------------------------------------------------------------------------------------------------- INT8

INT8_FORM = "int8"
NEEDS_CALIBRATION = ("onnx", "openvino", "executorch", "litert")   # Core ML's int8 is weight-only


def has_recipe(model: str) -> bool:
    from ..errors import ConfigError
    from ..recipes import load_recipe
    from ..registry import get_spec

    try:
        load_recipe(get_spec(model).family)
    except ConfigError:
        return False
    return True


def form_spec(model: str, form: str) -> tuple[bool, str]:
    """(rewrite, artifact precision) of a results form. ``int8`` quantizes the rewritten form, or the model as
    written for a family without an export recipe (a --plugin model), which cannot be rewritten; ``bf16`` times
    that same FP32 artifact (or module) computed in bf16."""
    if form == INT8_FORM:
        return has_recipe(model), "int8"
    if form in COMPUTE_FORMS:  # the FP32 artifact the rewritten (or as-written) form times, computed in bf16
        return has_recipe(model), "fp32"
    return form == "rewritten", "fp32"


def fp32_form(model: str) -> str:
    """The FP32 form an ``int8`` or ``bf16`` entry is compared with (``speedup_vs_fp32``): the form it was
    quantized from, or computes in bf16."""
    return "rewritten" if form_spec(model, INT8_FORM)[0] else "original"


def validation_figures(v: dict | None) -> dict:
    """The figures of an export's check a results entry keeps (:data:`KEPT_FIGURES`): the FP32 validation's or,
    for an int8 artifact, the accuracy gate's."""
    return {k: v[k] for k in KEPT_FIGURES if k in (v or {})}


def entry_artifact(art: dict) -> dict:
    """What a results entry records of the artifact it timed (from its ``bench-artifact.json``)."""
    out = {"path": art["path"], "key": art.get("key"), "cached": art.get("cached"), "export_s": art.get("export_s"),
           "exporter": art.get("exporter"), "validation": art.get("validation"), "size_bytes": art.get("size_bytes")}
    if art.get("dynamic_batch"):  # the batch sweep's artifact: any batch, its input shape [-1, ...]
        out["dynamic_batch"] = True
    if art.get("quantization"):  # int8: gate figures, layers kept in FP, size ratio (export manifest)
        out["quantization"] = art["quantization"]
    if art.get("delegation"):  # executorch: the share of the program XNNPACK runs
        out["delegation"] = art["delegation"]
    return out


@functools.lru_cache(maxsize=16)
def _folder_digest(folder: str, stamp: tuple) -> dict:
    from ..quantize.calibration import _by_content, find_images

    files, hashes = _by_content(find_images(folder, "calibration" if stamp[0] == "c" else "--eval-data"))
    return {"sha256": hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest(), "images": len(files)}


def _stamp(folder: str, role: str) -> tuple:
    """What invalidates the in-process digest cache: the folder's files, sizes and mtimes."""
    p = Path(folder)
    try:
        return (role, tuple(sorted((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in p.rglob("*")
                                   if f.is_file())))
    except OSError:
        return (role, ())


def quantization_fields(model: str, fmt: str, *, calibration: str | None, calibration_size: int | None,
                        eval_data: str | None) -> dict:
    """What an INT8 artifact's cache key adds: the calibration folder's content digest (all its images: the
    held-out split is drawn from it too), the calibration size, the held-out folder's digest and the recipe's
    ``quantization`` section (gate, fallback, quantizer settings). Raises ``CalibrationError`` for a missing or
    empty folder."""
    from ..recipes import QuantizationOptions, load_recipe
    from ..registry import get_spec

    q = load_recipe(get_spec(model).family).quantization if has_recipe(model) else QuantizationOptions()
    fields: dict = {"recipe": q.model_dump(mode="json")}
    if fmt in NEEDS_CALIBRATION:
        if not calibration:
            from ..quantize.stage import QuantizationError

            raise QuantizationError(f"the int8 variant on {fmt} needs calibration images: --calibration DIR")
        fields["calibration"] = _folder_digest(str(Path(calibration).resolve()), _stamp(calibration, "c"))
        fields["calibration_size"] = calibration_size or q.calibration_size
        fields["eval_data"] = (_folder_digest(str(Path(eval_data).resolve()), _stamp(eval_data, "e"))
                               if eval_data else None)
    return fields


def entry_dir(model: str, fmt: str, rewrite: bool, key: str, precision: str = "fp32",
              dynamic_batch: bool = False) -> Path:
    tag = ("" if precision == "fp32" else f"-{precision}") + ("-dyn" if dynamic_batch else "")
    return cache_root() / "artifacts" / model / f"{fmt}-{'rewritten' if rewrite else 'original'}{tag}-{key}"


def lookup(model: str, fmt: str, rewrite: bool, key: str, precision: str = "fp32",
           dynamic_batch: bool = False) -> dict | None:
    """The manifest of a cached artifact, or None when it is absent or incomplete."""
    d = entry_dir(model, fmt, rewrite, key, precision, dynamic_batch)
    try:
        info = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    path = Path(info.get("path", ""))
    if not path.is_absolute():
        path = d / path
    if not path.exists():
        return None
    info["path"] = str(path)
    return info


@contextlib.contextmanager
def locked(directory: Path):
    """An exclusive lock next to ``directory`` so two hvit-bench runs do not export the same thing at once."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = directory.parent / f".{directory.name}.lock"
    with open(lock_path, "w") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: no lock, the manifest is still written last
            pass
        yield


def export_many(model: str, requests: list[tuple], *, input_size: int | None,
                checkpoint: str | None, batch_size: int = 1, precision: str = "fp32") -> list[dict]:
    """Export (or reuse) ``model`` in every (format, rewrite) of ``requests``, building the model once.

    A request may carry a third item, ``{"precision": "int8", "calibration": DIR, "calibration_size": N,
    "eval_data": DIR}``: that one is quantized as ``hvit-export --precision int8`` does it (gate and fallback
    included); ``{"dynamic_batch": true}`` exports it with a dynamic batch, as ``hvit-export --dynamic-batch``
    (the batch sweep's artifact, validated at batch 1 and 4). Returns one ``{"ok": True, "info": manifest}`` or ``{"ok": False, "error": text}`` per request,
    in order. Runs inside the export child process."""
    sessions: dict[tuple[bool, bool], object] = {}

    def session(rewrite: bool, dynamic: bool = False):
        # one ExportSession builds the model and its reference outputs once for every format
        if (rewrite, dynamic) not in sessions:
            sessions[rewrite, dynamic] = _session(model, rewrite=rewrite, input_size=input_size,
                                                  checkpoint=checkpoint, batch_size=batch_size, dynamic_batch=dynamic)
        return sessions[rewrite, dynamic]

    out = []
    for req in requests:
        fmt, rewrite = req[0], bool(req[1])
        opts = dict(req[2]) if len(req) > 2 and req[2] else {}
        try:
            out.append({"ok": True, "info": _export_one(model, fmt, rewrite, session, input_size=input_size,
                                                        checkpoint=checkpoint, batch_size=batch_size,
                                                        precision=opts.pop("precision", precision),
                                                        quant=opts)})
        except Exception as e:  # noqa: BLE001 - each request fails on its own, as one line
            from ..errors import HvitError

            text = " ".join(str(e).split())
            out.append({"ok": False, "error": text if isinstance(e, HvitError) else f"{type(e).__name__}: {text}"})
    return out


def _export_one(model: str, fmt: str, rewrite: bool, session, *, input_size, checkpoint, batch_size,
                precision, quant: dict | None = None) -> dict:
    from ..errors import ExportError
    from ..utils.io import atomic_write_json

    quant = dict(quant or {})
    dynamic = bool(quant.pop("dynamic_batch", False))
    rewrites = rewrite_names(model, fmt, rewrite)
    qfields = quantization_fields(model, fmt, **{k: quant.get(k) for k in (
        "calibration", "calibration_size", "eval_data")}) if precision == INT8_FORM else None
    key, fields = artifact_key(model, fmt, rewrite=rewrite, rewrites=rewrites, input_size=input_size,
                               batch_size=batch_size, precision=precision, checkpoint=checkpoint,
                               quantization=qfields, dynamic_batch=dynamic)
    d = entry_dir(model, fmt, rewrite, key, precision, dynamic)
    with locked(d):
        hit = lookup(model, fmt, rewrite, key, precision, dynamic)
        if hit:
            hit["cached"] = True
            return hit
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        kwargs = {}
        if precision == INT8_FORM and fmt in NEEDS_CALIBRATION:
            kwargs = {k: quant.get(k) for k in ("calibration", "calibration_size", "eval_data")}
        res = session(rewrite, dynamic).export(fmt, d, rewrite=rewrite, precision=None if precision == "fp32" else precision,
                                      **kwargs)
        seconds = time.perf_counter() - t0
        if not res.ok:
            raise ExportError(f"{model} → {fmt}: {res.error}")
        path = Path(res.path)
        v = res.validation or {}
        info = {
            "key": key, "fields": fields, "path": os.path.relpath(path, d) if path.is_relative_to(d) else str(path),
            "rewrites": list(res.rewrites), "input_shape": list(res.input_shape),
            "validation": validation_figures(v),
            "exporter": (res.entry or {}).get("exporter", "hvit_deploy.export"),
            "export_s": round(seconds, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "precision": precision, "size_bytes": (res.entry or {}).get("size_bytes"),
        }
        if dynamic:
            info["dynamic_batch"] = True
        if precision != "fp32":
            info["quantization"] = quantization_summary(res.entry or {})
        if (res.entry or {}).get("delegation"):  # executorch: the share XNNPACK runs (the INT8 program's own)
            info["delegation"] = {k: res.entry["delegation"].get(k) for k in
                                  ("share", "delegated_ops", "undelegated_ops", "subgraphs", "heavy_undelegated")}
        atomic_write_json(d / MANIFEST, info)
    info = lookup(model, fmt, rewrite, key, precision, dynamic) or info
    info["cached"] = False
    return info


def quantization_summary(entry: dict) -> dict:
    """The part of an INT8 manifest entry a results entry keeps: gate figures (before fallback and final), the
    layers kept in floating point, the calibration and held-out sets, the quantizer settings, the size ratio."""
    q = entry.get("quantization") or {}
    gate = q.get("gate") or {}
    out = {
        "size_ratio_vs_fp32": entry.get("size_ratio_vs_fp32"),
        "gate": {"passed": gate.get("passed"), "final": gate.get("final"),
                 "before_fallback": gate.get("before_fallback"), "tries": len(gate.get("tries") or [])} if gate
        else None,
        "thresholds": q.get("gate_thresholds"),
        "layers_in_fp": q.get("layers_in_fp", []),
        "calibration": q.get("calibration"), "held_out": q.get("held_out"),
        "settings": q.get("settings"),
    }
    if "check" in q:  # Core ML weight-only: the program check instead of a gate
        out["check"] = q["check"]
        out["settings"] = q.get("settings")
    return out


def _session(model: str, *, rewrite: bool, input_size, checkpoint, batch_size, dynamic_batch: bool = False):
    """An ``ExportSession`` (validation on). A family without a recipe (a model registered by a --plugin) is
    exported as written with the default recipe options; rewriting it is refused."""
    from ..errors import ConfigError
    from ..export import ExportSession
    from ..recipes import Recipe, load_recipe
    from ..registry import get_spec

    recipe = None
    family = get_spec(model).family
    try:
        load_recipe(family)
    except ConfigError:
        if rewrite:
            raise
        recipe = Recipe(family=family)
    return ExportSession(model, checkpoint=checkpoint, input_size=input_size,
                         batch_size=None if dynamic_batch else batch_size, recipe=recipe, validate=True,
                         dynamic_batch=dynamic_batch)
