"""INT8 OpenVINO IR with NNCF post-training quantization of the (validated FP32) OpenVINO model."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..recipes import QuantizationOptions
from ..formats.quiet import captured
from ..runtimes.int8_weights import openvino_weight_bits, weight_record


def overflow_fix_for(opts: QuantizationOptions) -> str | None:
    """NNCF's ``OverflowFix`` value to ask for (None: NNCF's default). ``auto``: ``enable`` (7-bit weights in every
    layer) on an x86 CPU without VNNI, where OpenVINO's 8-bit kernels add products in int16 and can saturate."""
    from ..utils.cpu import has_vnni, is_x86

    choice = opts.openvino_overflow_fix
    if choice == "auto":
        return "enable" if is_x86() and not has_vnni() else None
    return {"first_layer": "first_layer_only"}.get(choice, choice)


def quantize_openvino(fp32_xml: Path, out_xml: Path, calib: np.ndarray, batch: int, opts: QuantizationOptions,
                      ignored: list[str] | None = None) -> dict:
    from ..utils.batching import whole_chunks
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, AdvancedSmoothQuantParameters,
                                                       OverflowFix)

    core = ov.Core()
    model = core.read_model(str(fp32_xml))
    batches = whole_chunks(calib, batch)
    kwargs = {}
    if opts.model_type == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    advanced = {}
    if opts.smooth_quant_alpha is not None:
        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=opts.smooth_quant_alpha)
    overflow_fix = overflow_fix_for(opts)
    if overflow_fix is not None:
        advanced["overflow_fix"] = OverflowFix(overflow_fix)
    if advanced:
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    scope = recipe_scope(model, opts)
    if ignored or scope["patterns"] or scope["types"]:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(ignored or []), patterns=scope["patterns"],
                                                    types=scope["types"], validate=False)
    preset = nncf.QuantizationPreset.MIXED if opts.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    with captured():
        q = nncf.quantize(model, nncf.Dataset(batches), preset=preset, subset_size=len(batches),
                          fast_bias_correction=opts.fast_bias_correction, **kwargs)
    tmp = out_xml.with_name(f".{out_xml.stem}.{os.getpid()}.q.xml")
    try:
        ov.save_model(q, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), out_xml.with_suffix(".bin"))
        os.replace(tmp, out_xml)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)
    fq = sum(1 for op in q.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    return {"quantizer": f"nncf.quantize ({nncf.__version__})", "preset": opts.preset,
            "model_type": opts.model_type, "smooth_quant_alpha": opts.smooth_quant_alpha
            if opts.smooth_quant_alpha is not None else ("nncf default" if opts.model_type == "transformer" else None),
            "fast_bias_correction": opts.fast_bias_correction, "subset_size": len(batches),
            "overflow_fix": overflow_fix or "nncf default", "fake_quantize_ops": fq, "ignored_scope": list(ignored or []),
            "recipe_ignored_scope": {"patterns": scope["patterns"], "types": scope["types"],
                                     "nodes_matched": scope["matched"]},
            **weight_record(openvino_weight_bits(core.read_model(str(out_xml))))}


def recipe_scope(model, opts: QuantizationOptions) -> dict:
    """The recipe's own ignored scope (``openvino_ignored_patterns``/``_types``) and how many nodes it matches."""
    import re

    pats, types = list(opts.openvino_ignored_patterns), list(opts.openvino_ignored_types)
    matched = sum(1 for op in model.get_ordered_ops()
                  if op.get_type_name() in types or any(re.match(p, op.get_friendly_name()) for p in pats))
    return {"patterns": pats, "types": types, "matched": matched}


def quantizable_nodes(xml: Path) -> list[tuple[str, str]]:
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    return [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()
            if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")]
