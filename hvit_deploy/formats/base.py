"""The format table: one registered :class:`Format` per exporter module (ONNX, OpenVINO IR, Core ML).

A **format** is what an exporter writes; the runtimes that run it are in :mod:`hvit_deploy.runtimes`. Each format
module of this package (``onnx.py``, ``openvino.py``, ``coreml.py``) declares its format once at its end with
:func:`register_format`: the main file's suffix, the side files written beside it (OpenVINO's ``.bin``), whether
the artifact is a directory (a Core ML ``.mlpackage``), the runtime that validates it, the precisions it may
hold and the tools whose versions change it. Everything that needs one of those facts (the export session, the
precision stage, ``hvit-bench``'s artifact cache, ``hvit-eval``) asks this table, e.g. :func:`format_of_path`.

The table finds its modules by name (:class:`~hvit_deploy.utils.registry.Registry` discovery: every module of
``hvit_deploy.formats`` except the helpers named in ``_HELPERS``), so a new format is one module here.

``Format.export(job)`` converts ``job.model``, validates the candidate with ``job.validate`` (which runs it on
the format's reference runtime and compares with eager PyTorch) and moves it to ``job.path`` only when it
passed; it returns the exporter's facts (exporter used, op types, validation figures, ...).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import HvitError
from ..utils.registry import Registry

# modules of hvit_deploy.formats that are not formats (discovery skips them, and "base")
_HELPERS = ("artifact", "metadata", "quiet")


class UnknownFormatError(HvitError):
    """A format name (``--to``) or an artifact path that no registered format writes."""


@dataclass
class ExportJob:
    """What an exporter gets: the (rewritten) module, an example input, where to write, the recipe, the
    validator, and the options the user chose."""

    model: Any                       # torch.nn.Module
    example: Any                     # torch.Tensor, the export shape
    path: Path
    recipe: Any                      # hvit_deploy.recipes.Recipe
    validate: Callable | None        # validate(run_fn) -> (figures, failures); None: --no-validate
    precision: str                   # the artifact precision asked for (fp32, fp16)
    opset: int | None = None
    output_shape: tuple[int, ...] | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str                                   # of the main file (".onnx", ".xml", ".mlpackage")
    export: Callable[[ExportJob], dict]
    precisions: tuple[str, ...]                   # what --precision may ask of the exporter itself
    default_precision: Callable[[Any], str]       # recipe -> precision when the user names none
    tools: tuple[str, ...]                        # packages whose version changes the artifact (cache keys)
    runtime: str | None = None                    # the runtime validation runs it on (None: not runnable here)
    run: Callable | None = None                   # run(path, inputs) -> outputs per input, on that runtime
    sidecars: tuple[str, ...] = ()                # files written beside the main one (OpenVINO's ".bin")
    directory: bool = False                       # the artifact is a folder (a Core ML package)
    artifact_precisions: tuple[str, ...] = ()     # every precision an artifact of it may hold (with the
                                                  # precision stage: int8, w8, w4); empty: ``precisions``
    # compute precisions (hvit_deploy.quantize.compute) its artifact can ask its runtime for, and how: an FP32
    # artifact copied with the request written into it, compute_hint(src, dst, precision) (OpenVINO: bf16)
    compute_precisions: tuple[str, ...] = ()
    compute_hint: Callable[[Path, Path, str], None] | None = None
    order: int = 100                              # where it comes in ``--to all`` (smaller first)
    aliases: tuple[str, ...] = ()
    description: str = ""
    # the format whose recipe section (rewrites) this one takes (ExecuTorch and LiteRT: onnx's)
    rewrites_like: str | None = None
    # None when the packages it needs are installed, else the one-line reason (how to install them)
    missing: Callable[[], str | None] = lambda: None

    def files(self, path: Path) -> list[Path]:
        """The main file and its side files (``model.xml`` -> ``[model.xml, model.bin]``)."""
        path = Path(path)
        return [path] + [path.with_suffix(s) for s in self.sidecars]

    def holds(self) -> tuple[str, ...]:
        return self.artifact_precisions or self.precisions


def _format_modules() -> list[str]:
    import importlib
    import pkgutil

    pkg = importlib.import_module(__package__)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name not in _HELPERS)


FORMAT_TABLE: Registry[Format] = Registry("format", discover=__package__, modules=_format_modules,
                                     error=UnknownFormatError)


def register_format(fmt: Format) -> Format:
    return FORMAT_TABLE.add(fmt.name, fmt, aliases=fmt.aliases)


def format_names() -> tuple[str, ...]:
    """Every format, in ``--to all`` order."""
    return tuple(sorted(FORMAT_TABLE.names(), key=lambda n: FORMAT_TABLE.get(n).order))


def get_format(name: str) -> Format:
    """The format called ``name`` (or an alias); unknown: one line naming the choices."""
    try:
        return FORMAT_TABLE.get(name)
    except UnknownFormatError:
        raise UnknownFormatError(_unknown(name)) from None


def _unknown(name: str) -> str:
    msg = FORMAT_TABLE.unknown_message(name)
    return msg if "did you mean" in msg else f"unknown format {name!r}; choose from {', '.join(format_names())} or all"


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
                out.extend(n for n in format_names() if get_format(n).missing() is None)
                continue
            fmt = get_format(f)
            if (why := fmt.missing()) is not None:
                raise BackendUnavailableError(why)
            out.append(fmt.name)
    return list(dict.fromkeys(out))


def skipped_by_all() -> dict[str, str]:
    """The formats ``--to all`` leaves out here, with the reason (their packages are not installed)."""
    return {n: why for n in format_names() if (why := get_format(n).missing()) is not None}


def format_of_path(path: str | os.PathLike, *, strict: bool = True) -> str | None:
    """The format whose main file ``path`` is, by its suffix (``model.xml`` -> ``openvino``). Unknown: a one-line
    :class:`UnknownFormatError` naming the suffixes known (``strict``), else None."""
    suffix = Path(path).suffix.lower()
    for fmt in FORMAT_TABLE.values():
        if fmt.suffix == suffix:
            return fmt.name
    if not strict:
        return None
    known = " or ".join(", ".join(get_format(n).suffix for n in format_names()).rsplit(", ", 1))
    raise UnknownFormatError(f"{Path(path).name}: unknown artifact type (expected {known})")


def artifact_files(path: str | os.PathLike) -> list[Path]:
    """An artifact's files: the main one and its side files, by the format its suffix names."""
    return get_format(format_of_path(path)).files(Path(path))
