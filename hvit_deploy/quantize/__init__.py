"""The precision stage: post-training INT8 (ONNX Runtime, NNCF) and Core ML weight compression of a validated
FP32 artifact, with the calibration images, the accuracy gate and the per-layer fallback. The entry point is
:func:`hvit_deploy.quantize.stage.convert` (see :mod:`.stage`); :mod:`hvit_deploy.export` calls it after the FP32
export. Nothing here imports :mod:`hvit_deploy.export`."""
from .calibration import CalibrationError, ImageSet, find_images, split_sets
from .stage import PRECISIONS, GateInputs, QuantizationError, check_request, convert, eager_logits

__all__ = ["CalibrationError", "GateInputs", "ImageSet", "PRECISIONS", "QuantizationError", "check_request",
           "convert", "eager_logits", "find_images", "split_sets"]
