"""Runtimes: what runs a model or an exported artifact, one module per runtime (see :mod:`.base`)."""
from __future__ import annotations

from .base import (
    RUNTIMES,
    Runtime,
    RuntimeSpec,
    Unavailable,
    UnknownRuntimeError,
    canonical_runtime,
    get_runtime,
    gpu_runtimes,
    list_runtimes,
    open_runtime,
    register_runtime,
    run_artifact,
    runtime_names,
    runtimes_for_format,
)

__all__ = [
    "RUNTIMES", "Runtime", "RuntimeSpec", "Unavailable", "UnknownRuntimeError", "canonical_runtime", "get_runtime",
    "gpu_runtimes", "list_runtimes", "open_runtime", "register_runtime", "run_artifact", "runtime_names",
    "runtimes_for_format",
]
