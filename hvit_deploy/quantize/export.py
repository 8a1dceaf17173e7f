"""Former home of ``--precision int8`` (and ``w4``). The conversion is now a stage of its own,
:func:`hvit_deploy.quantize.stage.convert` (an FP32 export result in, a new artifact out), called by
:meth:`hvit_deploy.export.pipeline.ExportSession.export` after the FP32 export. The names callers import from
here (the CLI's request check, ``hvit-eval``'s eager pass, hvit-bench's error class) are kept."""
from __future__ import annotations

from ..utils.batching import run_in_batches as _run_batched  # noqa: F401  (hvit-eval, until it imports utils)
from .stage import PRECISIONS, QuantizationError, check_request, eager_logits  # noqa: F401

__all__ = ["PRECISIONS", "QuantizationError", "check_request", "eager_logits"]
