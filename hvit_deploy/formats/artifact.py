"""Artifact helpers shared by the exporters, the precision stage and hvit-bench: the result record of one export,
the artifact's file stem, its content hash and its size on disk."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ExportResult:
    model: str
    format: str
    ok: bool
    path: Path | None = None
    error: str | None = None
    input_shape: tuple[int, ...] = ()
    rewrites: list[str] = field(default_factory=list)
    validation: dict = field(default_factory=dict)
    entry: dict = field(default_factory=dict)
    seconds: float = 0.0


def artifact_stem(name: str, *, rewritten: bool, precision: str, input_shape: tuple[int, ...], default_size,
                  dynamic_batch: bool = False, input_kind: str = "normalized", features: bool = False) -> str:
    stem = name + ("-features" if features else "")
    if not rewritten:
        stem += "-original"
    if tuple(input_shape[1:]) != tuple(default_size):
        h, w = input_shape[2], input_shape[3]
        stem += f"-{h}" if h == w else f"-{h}x{w}"
    if dynamic_batch:
        stem += "-dyn"
    elif input_shape[0] != 1:
        stem += f"-b{input_shape[0]}"
    if precision != "fp32":
        stem += f"-{precision}"
    stem += {"normalized": "", "pixels": "-norm", "image": "-image"}[input_kind]
    return stem


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, or of a directory's files and their relative names (a Core ML package)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_of(path: Path) -> int:
    """Bytes on disk: a file, or every file below a directory (a Core ML package)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
