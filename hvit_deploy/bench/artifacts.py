"""The artifact cache: exported models reused across runs, keyed by model, rewrites and tool versions.

Layout: ``$HVIT_CACHE_DIR/artifacts/<model>/<format>-<rewritten|original>-<key>/`` holding what the exporter
wrote plus ``bench-artifact.json`` (the key fields, the artifact path, export time, validation). The key is a
hash of everything that changes the exported file: model, format, rewrite names, input size, batch, precision,
checkpoint (path, size, mtime), the versions of torch/onnx/onnxsim/openvino/coremltools, and a digest of the
project's own source (models, rewrites, exporters, recipes), so editing a rewrite re-exports.

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

from ..resources import recipes_dir
from .environment import package_version

MANIFEST = "bench-artifact.json"

from ..runtimes import get_runtime
from ..runtimes.torch_cpu import REWRITE_FORMAT as TORCH_REWRITE_FORMAT


def runtime_format(backend: str) -> str | None:
    """The export format a runtime times (None: the PyTorch module itself)."""
    return get_runtime(backend).format


def format_tools(fmt: str | None) -> tuple[str, ...]:
    """The tools whose version changes an artifact of ``fmt`` (the torch module: torch and timm)."""
    if fmt is None:
        return ("torch", "timm")
    from ..export.formats import get_format

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
    pkg = Path(__file__).resolve().parents[1]
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
                 batch_size: int = 1, precision: str = "fp32", checkpoint: str | None = None) -> tuple[str, dict]:
    fields = {
        "model": model, "format": fmt, "rewrite": bool(rewrite), "rewrites": list(rewrites),
        "input_size": input_size, "batch_size": batch_size, "precision": precision,
        "checkpoint": checkpoint_id(checkpoint),
        "tools": {t: package_version(t) for t in format_tools(fmt)},
        "hvit_deploy": package_version("hvit-deploy"),
        "source": source_digest(),
    }
    blob = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12], fields


def entry_dir(model: str, fmt: str, rewrite: bool, key: str) -> Path:
    return cache_root() / "artifacts" / model / f"{fmt}-{'rewritten' if rewrite else 'original'}-{key}"


def lookup(model: str, fmt: str, rewrite: bool, key: str) -> dict | None:
    """The manifest of a cached artifact, or None when it is absent or incomplete."""
    d = entry_dir(model, fmt, rewrite, key)
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


def export_many(model: str, requests: list[tuple[str, bool]], *, input_size: int | None,
                checkpoint: str | None, batch_size: int = 1, precision: str = "fp32") -> list[dict]:
    """Export (or reuse) ``model`` in every (format, rewrite) of ``requests``, building the model once.

    Returns one ``{"ok": True, "info": manifest}`` or ``{"ok": False, "error": text}`` per request, in order.
    Runs inside the export child process."""
    sessions: dict[bool, object] = {}

    def session(rewrite: bool):
        # one ExportSession builds the model and its reference outputs once for every format
        if rewrite not in sessions:
            sessions[rewrite] = _session(model, rewrite=rewrite, input_size=input_size, checkpoint=checkpoint,
                                         batch_size=batch_size)
        return sessions[rewrite]

    out = []
    for fmt, rewrite in requests:
        try:
            out.append({"ok": True, "info": _export_one(model, fmt, rewrite, session, input_size=input_size,
                                                        checkpoint=checkpoint, batch_size=batch_size,
                                                        precision=precision)})
        except Exception as e:  # noqa: BLE001 - each request fails on its own, as one line
            from ..errors import HvitError

            text = " ".join(str(e).split())
            out.append({"ok": False, "error": text if isinstance(e, HvitError) else f"{type(e).__name__}: {text}"})
    return out


def _export_one(model: str, fmt: str, rewrite: bool, session, *, input_size, checkpoint, batch_size,
                precision) -> dict:
    from ..errors import ExportError
    from ..utils.io import atomic_write_json

    rewrites = rewrite_names(model, fmt, rewrite)
    key, fields = artifact_key(model, fmt, rewrite=rewrite, rewrites=rewrites, input_size=input_size,
                               batch_size=batch_size, precision=precision, checkpoint=checkpoint)
    d = entry_dir(model, fmt, rewrite, key)
    with locked(d):
        hit = lookup(model, fmt, rewrite, key)
        if hit:
            hit["cached"] = True
            return hit
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        res = session(rewrite).export(fmt, d, rewrite=rewrite, precision=None if precision == "fp32" else precision)
        seconds = time.perf_counter() - t0
        if not res.ok:
            raise ExportError(f"{model} → {fmt}: {res.error}")
        path = Path(res.path)
        v = res.validation or {}
        info = {
            "key": key, "fields": fields, "path": os.path.relpath(path, d) if path.is_relative_to(d) else str(path),
            "rewrites": list(res.rewrites), "input_shape": list(res.input_shape),
            "validation": {k: v[k] for k in ("passed", "max_abs", "cosine", "top1", "top5") if k in v} or v,
            "exporter": (res.entry or {}).get("exporter", "hvit_deploy.export"),
            "export_s": round(seconds, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(d / MANIFEST, info)
    info = lookup(model, fmt, rewrite, key) or info
    info["cached"] = False
    return info


def _session(model: str, *, rewrite: bool, input_size, checkpoint, batch_size):
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
    return ExportSession(model, checkpoint=checkpoint, input_size=input_size, batch_size=batch_size,
                         recipe=recipe, validate=True)
