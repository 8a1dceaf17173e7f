"""The precision ladder: which precisions each runtime may run a model in, and the typed record of one measured
ladder (``--precision auto`` of ``hvit-export`` and ``hvit-bench``).

A rung is one entry of :data:`RUNGS`: a (runtime, precision) pair, the export format that runtime runs (None:
the PyTorch module itself), the ``hvit-bench`` form that times it, and what it needs (calibration images, a CPU
with BF16 arithmetic). A new precision on a runtime is one more entry here, nothing else.

:class:`Ladder` is what a measured ladder records (in ``DIR/manifest.json`` under ``ladders`` and in the
``hvit-bench`` results file): every rung of one (model, runtime) with its status (picked, passed over and why,
failed its gate, not built here and why), its latency ratio to FP32 measured in the same interleaved run with
the block-bootstrap interval, its gate figures and size, and the pick: the fastest rung that passed its gate.
Versioned by ``schema_version``; unknown keys are kept.
"""
from __future__ import annotations

from typing import Any, Literal, NamedTuple, Optional

from pydantic import BaseModel, ConfigDict, Field

LADDER_SCHEMA_VERSION = 1
INT8_PAYS = 1.2   # INT8 is recommended only when it is at least this many times faster than FP32 (median ratio)


class RungSpec(NamedTuple):
    runtime: str             # the runtime that runs it (hvit_deploy.runtimes)
    format: Optional[str]    # the export format it runs (None: the PyTorch module)
    precision: str           # the rung's name: fp32, bf16, fp16, int8
    form: str                # the hvit-bench form (``--variants``) that times it
    needs: str = ""          # "calibration" (INT8: images to calibrate and gate on), "cpu_bf16" (BF16 arithmetic)


# One entry per (runtime, precision). FP32 first: it is the reference every other rung's ratio is taken against.
RUNGS: tuple[RungSpec, ...] = (
    RungSpec("torch", None, "fp32", "rewritten"),
    RungSpec("onnxruntime", "onnx", "fp32", "rewritten"),
    RungSpec("onnxruntime", "onnx", "int8", "int8", "calibration"),
    RungSpec("openvino", "openvino", "fp32", "rewritten"),
    RungSpec("openvino", "openvino", "int8", "int8", "calibration"),
    # BF16 compute (OpenVINO's bf16 inference hint, torch bf16 autocast: hvit-bench's ``bf16`` form), built
    # only where the CPU has BF16 arithmetic; elsewhere each is listed with that reason.
    RungSpec("openvino", "openvino", "bf16", "bf16", "cpu_bf16"),
    RungSpec("torch", None, "bf16", "bf16", "cpu_bf16"),
    RungSpec("executorch", "executorch", "fp32", "rewritten"),
    RungSpec("executorch", "executorch", "int8", "int8", "calibration"),   # PT2E, XNNPACK quantizer
    RungSpec("litert", "litert", "fp32", "rewritten"),
    RungSpec("litert", "litert", "int8", "int8", "calibration"),           # PT2E, litert-torch's quantizer
)


def rungs_of(runtime: str) -> list[RungSpec]:
    """The rungs of ``runtime``, FP32 first (empty for a runtime with no ladder)."""
    return [r for r in RUNGS if r.runtime == runtime]


def runtime_of_format(fmt: str) -> Optional[str]:
    """The runtime whose rungs a format's ladder takes (the one it is validated on)."""
    return next((r.runtime for r in RUNGS if r.format == fmt), None)


RungStatus = Literal["picked", "passed", "gate_failed", "failed", "not_built"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class LadderRung(_Record):
    """One precision of one runtime: measured (``picked``, ``passed`` over: slower than the pick), refused by its
    gate (``gate_failed``), broken (``failed``: export or timing error) or ``not_built`` here; ``why`` says."""

    precision: str
    form: str
    status: RungStatus
    why: Optional[str] = None
    artifact_precision: Optional[str] = None   # what the file holds (fp32, int8, ...)
    compute_precision: Optional[str] = None    # what the runtime session computed in (fp32, bf16, ...)
    path: Optional[str] = None
    size_bytes: Optional[int] = None
    median_ms: Optional[float] = None
    median_ci_ms: Optional[list[float]] = None
    ratio_vs_fp32: Optional[float] = None      # FP32 median / this median, same run (> 1: faster than FP32)
    ratio_ci: Optional[list[float]] = None     # its block-bootstrap interval
    gate_passed: Optional[bool] = None
    gate: Optional[dict[str, Any]] = None      # the gate's (or, for FP32, the export validation's) figures
    recommended: Optional[bool] = None         # INT8: whether it pays (ratio >= INT8_PAYS)
    verdict: Optional[str] = None              # INT8 that does not pay: the sentence the tool prints


class Ladder(_Record):
    """The ladder of one model on one runtime (see the module docstring)."""

    schema_version: int = LADDER_SCHEMA_VERSION
    model: str
    runtime: str
    format: Optional[str] = None
    threads: Optional[int] = None
    iterations: Optional[int] = None
    rounds: Optional[int] = None
    processes: Optional[int] = None
    cpu: dict[str, Any] = Field(default_factory=dict)
    rungs: list[LadderRung] = Field(default_factory=list)
    pick: Optional[str] = None                 # the picked rung's precision (None: no rung passed and ran)
    pick_path: Optional[str] = None
    pick_note: Optional[str] = None            # a pick other than FP32 whose interval reaches 1.0: not settled
    results: Optional[str] = None              # the hvit-bench results file of the timed run

    def rung(self, precision: str) -> Optional[LadderRung]:
        return next((r for r in self.rungs if r.precision == precision), None)

    @property
    def key(self) -> tuple:
        return (self.model, self.runtime, self.format, self.threads)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
