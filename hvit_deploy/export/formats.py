"""The export formats: one registered :class:`Format` per exporter (ONNX, OpenVINO IR, Core ML).

A **format** is what an exporter writes; the runtimes that run it are in :mod:`hvit_deploy.runtimes`. Each
exporter module registers its format at its end with :func:`register_format`; :class:`~.pipeline.ExportSession`
looks the format up here instead of branching on its name, so a new format is one exporter module plus one
registration (and its name in :data:`EXPORTER_MODULES`).

``Format.export(job)`` converts ``job.model``, validates the candidate with ``job.validate`` (which runs it on
the format's reference runtime and compares with eager PyTorch) and moves it to ``job.path`` only when it
passed; it returns the exporter's facts (exporter used, op types, validation figures, ...).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# the modules that register formats, in the order `--to all` exports them
EXPORTER_MODULES = ("onnx_exporter", "openvino_exporter", "coreml_exporter", "..formats.executorch", "..formats.litert")


@dataclass
class ExportJob:
    """What an exporter gets: the (rewritten) module, an example input, where to write, the recipe, the
    validator, and the options the user chose."""

    model: Any                       # torch.nn.Module
    example: Any                     # torch.Tensor, the export shape
    path: Path
    recipe: Any                      # hvit_deploy.recipes.Recipe
    validate: Callable | None        # validate(run_fn) -> (figures, failures); None: --no-validate
    precision: str
    opset: int | None = None
    output_shape: tuple[int, ...] | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str                                   # of the main file (".onnx", ".xml", ".mlpackage")
    export: Callable[[ExportJob], dict]
    precisions: tuple[str, ...]                   # what --precision may ask of it
    default_precision: Callable[[Any], str]       # recipe -> precision when the user names none
    tools: tuple[str, ...]                        # packages whose version changes the artifact (cache keys)
    runtime: str | None = None                    # the runtime validation runs it on (None: not runnable here)
    sidecars: tuple[str, ...] = ()                # files written beside the main one (OpenVINO's ".bin")
    aliases: tuple[str, ...] = ()
    description: str = ""
    # the format whose recipe rewrites this one takes (until recipes say ``executorch: {like: onnx}``)
    rewrites_like: str | None = None
    # None when the packages it needs are installed, else the one-line reason (how to install them)
    missing: Callable[[], str | None] = lambda: None

    def files(self, path: Path) -> list[Path]:
        return [path] + [path.with_suffix(s) for s in self.sidecars]


_FORMATS: dict[str, Format] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def register_format(fmt: Format) -> Format:
    if fmt.name in _FORMATS:
        raise ValueError(f"format {fmt.name!r} registered twice")
    _FORMATS[fmt.name] = fmt
    for a in fmt.aliases:
        _ALIASES[a] = fmt.name
    return fmt


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in EXPORTER_MODULES:
            importlib.import_module(mod if mod.startswith(".") else f".{mod}", __package__)


def format_names() -> tuple[str, ...]:
    _ensure_loaded()
    return tuple(_FORMATS)


def get_format(name: str) -> Format:
    from ..errors import HvitError

    _ensure_loaded()
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _FORMATS:
        raise HvitError(f"unknown format {name!r}; choose from {', '.join(_FORMATS)} or all")
    return _FORMATS[key]


def parse_formats(values: list[str]) -> list[str]:
    """``--to`` values (names, aliases, ``all``, comma lists) as format names, each once, in order. ``all`` leaves
    out the formats whose packages are not installed (:func:`skipped_by_all` says which); a format named
    explicitly whose packages are missing is refused with the one-line install hint."""
    from ..errors import BackendUnavailableError

    out: list[str] = []
    for v in values:
        for f in v.split(","):
            f = f.strip().lower()
            if not f:
                continue
            if f == "all":
                out.extend(n for n in format_names() if _FORMATS[n].missing() is None)
                continue
            fmt = get_format(f)
            if fmt.missing() is not None:
                raise BackendUnavailableError(fmt.missing())
            out.append(fmt.name)
    return list(dict.fromkeys(out))


def skipped_by_all() -> dict[str, str]:
    """The formats ``--to all`` leaves out here, with the reason (their packages are not installed)."""
    _ensure_loaded()
    return {n: why for n, f in _FORMATS.items() if (why := f.missing()) is not None}
