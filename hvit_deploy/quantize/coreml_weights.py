"""Core ML weight compression with ``coremltools.optimize.coreml``.

``int8``: 8-bit linear (symmetric) weight quantization, per output channel; activations stay in floating point.
Quantizing activations needs calibration data run through Core ML itself, which only macOS can do, so on
Core ML ``--precision int8`` means weight-only 8 bit. ``w4``: 4-bit palettization of the weights (a 16-entry
look-up table per tensor, k-means), which Core ML runs from iOS 16.
"""
from __future__ import annotations

from pathlib import Path

from ..formats.coreml import check_program, inspect_package
from ..formats.quiet import captured, import_coremltools

WEIGHT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense")


def quantize_coreml_weights(fp32_pkg: Path, target: Path, precision: str, q, input_shape, output_shape) -> dict:
    ct = import_coremltools()
    import coremltools.optimize.coreml as cto

    with captured():
        model = ct.models.MLModel(str(fp32_pkg), skip_model_load=True)
        if precision == "w4":
            config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=4, mode="kmeans",
                                                                                 granularity="per_tensor"))
            compressed = cto.palettize_weights(model, config)
            settings = {"quantizer": "coremltools.optimize.coreml.palettize_weights", "nbits": 4, "mode": "kmeans",
                        "granularity": "per_tensor", "activations": "float32 (weight-only)"}
        else:
            config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity=q.coreml_granularity))
            compressed = cto.linear_quantize_weights(model, config)
            settings = {"quantizer": "coremltools.optimize.coreml.linear_quantize_weights", "dtype": "int8",
                        "mode": "linear_symmetric", "granularity": q.coreml_granularity,
                        "activations": "float32 (weight-only; activation calibration needs macOS)"}
        compressed.save(str(target))
    facts = inspect_package(target)
    bad = check_program(facts, input_shape, output_shape, precision)
    info = {"settings": settings, "program": facts,
            "check": {"ran": False, "weight_ops": {k: facts["op_types"].get(k, 0) for k in WEIGHT_OPS},
                      "reason": "Core ML runs only on macOS; the compressed program was checked instead"},
            "ok": not bad}
    if bad:
        info["error"] = "Core ML program check failed: " + "; ".join(bad)
    return info
