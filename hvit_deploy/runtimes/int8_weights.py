"""Whether an INT8 artifact's integer arithmetic is exact on this CPU: 7-bit or 8-bit weights, read from the file.

x86 CPUs without VNNI (AVX2 and AVX-512 without it) multiply unsigned 8-bit activations by signed 8-bit weights with
``vpmaddubsw``, which adds each pair of products in int16 and saturates: 255 x 127 x 2 = 64770 does not fit, while
with weights within ±64 (7-bit) it always does (32640). CPUs with VNNI or AMX (and Arm's dot products) add in int32,
exactly. ONNX Runtime's and OpenVINO's CPU kernels both work this way, so the quantizers give 7-bit weights where the
exporting CPU lacks VNNI (``onnx_reduce_range`` and ``openvino_overflow_fix``, ``auto``) and 8-bit elsewhere. An
artifact made on a VNNI CPU and run on one without it is then computed with saturated sums: measured on a Milan
(AVX2), efficientmod_xxs's ONNX INT8 with 8-bit weights failed its gate at a mean cosine of 0.970 where the 7-bit
file passes at 0.9996. The runtimes read the weights' range from the file (:func:`onnx_weight_bits`,
:func:`openvino_weight_bits`) and say so (:func:`saturation_note`) when they run such a file on such a CPU.
"""
from __future__ import annotations

from pathlib import Path

# the ops that take int8 weights in the kernels that saturate (depthwise GroupConvolution kernels do not pair
# products: NNCF's overflow fix leaves their weights 8-bit)
_OV_SATURATING = ("Convolution", "MatMul")
_OV_PASS = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose")
_ONNX_QUANT_WEIGHT_OPS = ("DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")


def onnx_weight_bits(path: str | Path) -> int | None:
    """8 when an int8 weight of the ONNX file at ``path`` lies beyond ±64, 7 when all lie within, None when the file
    has no int8 weights (not an INT8 file)."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        if not any(raw.find(op.encode()) >= 0 for op in _ONNX_QUANT_WEIGHT_OPS):  # op types are stored as text
            return None  # no quantized op: not an INT8 file (and no import of onnx in a worker that does not need it)
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    if not inits:
        return None
    used = {i for n in model.graph.node if n.op_type in _ONNX_QUANT_WEIGHT_OPS for i in n.input if i in inits}
    widest = 0
    for name in used:
        v = numpy_helper.to_array(inits[name])
        if v.size > 1:  # a zero point is one value
            widest = max(widest, int(abs(int(v.min()))), int(v.max()))
    return None if not widest else (8 if widest > 64 else 7)


def openvino_weight_bits(model) -> int | None:
    """The same for an OpenVINO model (``ov.Model``): its i8 weight constants that feed a Convolution or MatMul
    (through the Convert/Subtract/Multiply of a compressed weight). 8 when one spans more than 128 values."""
    widest = None
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_element_type().get_type_name() != "i8":
            continue
        node = op
        for _ in range(len(_OV_PASS) + 1):
            targets = list(node.output(0).get_target_inputs())
            if not targets:
                break
            node = targets[0].get_node()
            if node.get_type_name() not in _OV_PASS:
                break
        if node.get_type_name() not in _OV_SATURATING:
            continue
        v = op.get_data()
        if v.size > 1:
            widest = max(widest or 0, int(v.max()) - int(v.min()))
    return None if widest is None else (8 if widest > 128 else 7)


def exact_on(bits: int | None) -> str | None:
    """Where an INT8 file's integer sums are exact, in words (the manifest's ``settings.exact_on``)."""
    if bits is None:
        return None
    if bits == 7:
        return "every CPU (7-bit weights: no int16 sum can saturate)"
    return ("CPUs that add int8 products in int32: x86 with VNNI or AMX, Arm; on an x86 CPU without VNNI the int16 "
            "sums can saturate")


def weight_record(bits: int | None) -> dict:
    """The manifest's record of a written INT8 file: its weights' width and where its integer sums are exact."""
    return {"weight_bits": bits, "exact_on": exact_on(bits)}


def saturation_note(bits: int | None, runtime: str, fix: str) -> str | None:
    """The line a runtime adds to its notes when an 8-bit-weight INT8 file runs on an x86 CPU without VNNI (None
    otherwise); ``fix`` names the recipe setting that gives 7-bit weights."""
    from ..utils.cpu import has_vnni, is_x86

    if bits != 8 or not is_x86() or has_vnni():
        return None
    return (f"this INT8 file has 8-bit weights (as quantized on a CPU with VNNI) and this CPU has none: {runtime}'s "
            "int8 kernels add pairs of products in int16 and can saturate, so its accuracy here can be below what its "
            f"gate measured; re-export on this CPU or with 7-bit weights (recipe: {fix})")
