"""Compute precisions: an FP32 artifact (or the eager module) computed in a lower precision by its runtime.

A precision names two things, kept apart in every record: ``artifact_precision``, what the file holds (fp32, fp16,
int8, w8, w4), and ``compute_precision``, what the runtime session computes in. INT8 and w4 change the file
(:mod:`.stage`); **bf16** changes only the arithmetic: the artifact stays the validated FP32 one, and the runtime
is asked to compute in bfloat16 (OpenVINO's CPU plugin: ``INFERENCE_PRECISION_HINT=bf16``; torch eager on the
CPU: ``torch.autocast("cpu", dtype=torch.bfloat16)``). So ``--precision bf16`` yields ``artifact_precision:
fp32``, ``compute_precision: bf16`` — where the session really computed in bf16: what the runtime reads back
is recorded, never the word that was asked for.

Before a bf16 artifact is written, or a bf16 ``hvit-bench`` entry is timed, it passes the same accuracy gate as
INT8 (:mod:`.gate`: top-1 agreement with near ties, top-5, mean cosine, accuracy drop with labels) against eager
FP32 on held-out images (:func:`.calibration.held_out_set`: ``--eval-data``, else the held-out split of
``--calibration``, else the shipped photos). :func:`compute_gate` runs that check for any runtime.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..utils.batching import run_in_batches
from .gate import gate_failures, gate_figures

if TYPE_CHECKING:
    from ..recipes import QuantGate
    from .calibration import ImageSet

COMPUTE_PRECISIONS = ("bf16",)   # the --precision words that change what a runtime computes in, not the file


def compute_gate(runtime: str, spec: dict, held: ImageSet, reference_logits: np.ndarray, gate: QuantGate,
                 batch: int = 1) -> dict:
    """Open ``spec`` (its ``compute_precision`` the one asked for) on ``runtime``, run the held-out images, and
    judge its outputs against eager FP32's ``reference_logits`` with the INT8 gate. Returns the record kept in
    manifests and results: ``asked`` and the ``compute_precision`` the session read back, its ``notes``, the
    gate's ``figures``, ``failures``, ``passed``, ``thresholds`` and the ``held_out`` set."""
    from ..runtimes import open_runtime

    rt = open_runtime(runtime, spec)
    try:
        out = run_in_batches(lambda xs: rt.predict(xs), held.arrays, batch)
        got, notes = rt.compute_precision, list(rt.notes)
    finally:
        rt.close()
    fig = gate_figures(reference_logits, out, held.labels, gate.tie_logit_margin)
    bad = gate_failures(fig, gate)
    return {"runtime": runtime, "asked": spec.get("compute_precision"), "compute_precision": got, "notes": notes,
            "figures": fig, "failures": bad, "passed": not bad, "thresholds": gate.model_dump(),
            "held_out": held.describe()}


def failure_text(check: dict) -> str:
    """One line for a compute precision that failed its gate (the figures stay in the record)."""
    return f"{(check.get('asked') or 'low-precision').upper()} accuracy gate failed: " + "; ".join(check["failures"])
