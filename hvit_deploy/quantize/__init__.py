"""Post-training INT8: calibration images, ONNX Runtime / NNCF / coremltools quantizers, the accuracy gate and
the per-layer fallback. The entry point is :func:`hvit_deploy.quantize.export.export_quantized`."""
from .calibration import CalibrationError, ImageSet, find_images, split_sets

__all__ = ["CalibrationError", "ImageSet", "find_images", "split_sets"]
