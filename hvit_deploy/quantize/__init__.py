"""The precision stage: post-training INT8 (ONNX Runtime, NNCF), Core ML weight compression and compute
precisions (bf16: :mod:`.compute`) of a validated FP32 artifact, with the calibration images, the accuracy gate and the per-layer fallback. The entry point is
:func:`hvit_deploy.quantize.stage.convert` (see :mod:`.stage`); :mod:`hvit_deploy.export` calls it after the FP32
export. Nothing here imports :mod:`hvit_deploy.export`."""
from . import compute
from .calibration import CalibrationError, ImageSet, find_images, held_out_set, split_sets
from .compute import COMPUTE_PRECISIONS, compute_gate
from .stage import PRECISIONS, GateInputs, QuantizationError, check_request, convert, eager_logits

__all__ = ["COMPUTE_PRECISIONS", "compute", "compute_gate", "held_out_set", "CalibrationError", "GateInputs", "ImageSet", "PRECISIONS", "QuantizationError", "check_request",
           "convert", "eager_logits", "find_images", "split_sets"]
