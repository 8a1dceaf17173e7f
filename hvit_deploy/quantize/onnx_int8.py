"""Static INT8 for ONNX with ONNX Runtime's own quantizer (QDQ format, per-channel weights).

Why ONNX Runtime's quantizer rather than NNCF's ONNX path: the artifact is meant for ONNX Runtime, whose CPU
execution provider fuses exactly the QDQ patterns its quantizer writes, and NNCF already quantizes the OpenVINO IR,
so the two INT8 paths are independent and a flaw of one quantizer does not hide behind the other.
Activations are unsigned 8 bit and weights signed (U8S8, recipe ``onnx_activations``): ONNX Runtime's documented
default is S8S8, but its x86 integer kernels take unsigned activations natively, and on our VNNI CPU S8S8 made
EfficientMod-xxs 0.65x as fast as FP32 while U8S8 made it 1.25x as fast (README, INT8).

Only the compute ops are quantized (``op_types_to_quantize``: Conv, MatMul, Gemm), so Add/Mul/Softmax and the
LayerNorm chains stay in float as they do in NNCF's OpenVINO graph; a recipe may add data-movement ops
(``onnx_data_movement_ops``: Transpose, Concat, Slice, ...), which then carry uint8 between quantized ops, and
elementwise ops (``onnx_elementwise_ops``: a Relu folded into its producer's range, Add/Mul as QLinearAdd/QLinearMul).
With the recipe's ``model_type: transformer`` the MatMul that multiplies the softmax's attention probabilities
with the values (``softmax → [reshape / transpose] → MatMul``) is kept in float too: that is NNCF's transformer
pattern ``multihead_attention_output``, and for a reason: probabilities of a few hundred tokens sit far below the
1/255 step of a per-tensor INT8 scale over [0, 1]. On efficientmod_xxs this one pattern takes the logits' cosine with FP32 from 0.997 to 0.9998.
A recipe may quantize some of them anyway (``onnx_attention_output_int8``, by name): a window of a few dozen
positions (ACmix-ResNet's 7x7) leaves its probabilities far above that step.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..recipes import QuantizationOptions
from ..formats.quiet import captured
from ..runtimes.int8_weights import onnx_weight_bits, weight_record

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


def pre_process(fp32: Path, work: Path, opts: QuantizationOptions) -> tuple[Path, str]:
    """ONNX Runtime's recommended pre-processing (shape inference and graph optimisation), best effort."""
    if not opts.onnx_pre_process:
        return fp32, "off"
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "preprocessed.onnx"
    try:
        with captured():
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
        return pre, "quant_pre_process"
    except Exception as e:  # the plain graph quantizes too; say why pre-processing was skipped
        return fp32, f"skipped ({type(e).__name__})"


# ops between a Softmax and the MatMul that reads its probabilities in the attention-output pattern
_LAYOUT_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast", "Flatten"}


def attention_output_matmuls(path: Path) -> list[str]:
    """MatMul nodes fed by a Softmax directly or through layout ops (NNCF's ``multihead_attention_output``)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}

    def from_softmax(t: str) -> bool:
        p = producer.get(t)
        while p is not None and p.op_type in _LAYOUT_OPS and p.input:
            p = producer.get(p.input[0])
        return p is not None and p.op_type == "Softmax"

    return [n.name for n in model.graph.node if n.op_type == "MatMul" and any(from_softmax(i) for i in n.input)]


def reduce_range_for(opts: QuantizationOptions) -> bool:
    """7-bit weights: asked for, or ``auto`` on an x86 CPU without VNNI (where full-range U8S8 can saturate)."""
    from ..utils.cpu import has_vnni, is_x86

    if opts.onnx_reduce_range != "auto":
        return opts.onnx_reduce_range == "on"
    return opts.onnx_activations == "uint8" and is_x86() and not has_vnni()


def quantize_onnx(source: Path, out: Path, calib: np.ndarray, batch: int, opts: QuantizationOptions,
                  nodes_to_exclude: list[str] | None = None) -> dict:
    from ..utils.batching import whole_chunks
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self, batches):
            self._it = iter([{"input": b} for b in batches])

        def get_next(self):
            return next(self._it, None)

    pattern = attention_output_matmuls(source) if opts.model_type == "transformer" else []
    attention_int8 = [n for n in pattern if any(re.search(p, n) for p in opts.onnx_attention_output_int8)]
    pattern = [n for n in pattern if n not in attention_int8]
    ops = quantized_op_types(opts)
    by_recipe = recipe_excluded(source, opts.onnx_nodes_to_exclude, ops)
    out_of_scope = elementwise_out_of_scope(source, opts)
    excluded = list(dict.fromkeys(list(nodes_to_exclude or []) + pattern + by_recipe + out_of_scope))
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[opts.onnx_calibration]
    reduce_range = reduce_range_for(opts)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.q.onnx")
    try:
        with captured():
            quantize_static(str(source), str(tmp), Reader(whole_chunks(calib, batch)), quant_format=QuantFormat.QDQ,
                            per_channel=opts.onnx_per_channel, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8 if opts.onnx_activations == "uint8" else QuantType.QInt8,
                            weight_type=QuantType.QInt8, calibrate_method=method,
                            op_types_to_quantize=ops,
                            nodes_to_exclude=excluded,
                            extra_options={"CalibMaxIntermediateOutputs": 64})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "activations": f"{opts.onnx_activations} (per tensor, asymmetric)", "weights": ("int7 (reduce_range) " if reduce_range else "int8 ")
            + ("per channel" if opts.onnx_per_channel else "per tensor") + " symmetric", "reduce_range": reduce_range,
            "calibration_method": opts.onnx_calibration, "op_types_quantized": ops,
            "attention_output_in_fp": pattern, "attention_output_int8": attention_int8,
            "elementwise_out_of_scope": len(out_of_scope),
            "recipe_nodes_to_exclude": {"patterns": list(opts.onnx_nodes_to_exclude), "nodes": by_recipe},
            "nodes_excluded": excluded, **weight_record(onnx_weight_bits(out))}


def quantized_op_types(opts: QuantizationOptions) -> list[str]:
    """The op types handed to ONNX Runtime's quantizer: Conv/MatMul/Gemm and the recipe's data-movement and
    elementwise ops."""
    return list(dict.fromkeys([*QUANTIZED_OPS, *opts.onnx_data_movement_ops, *opts.onnx_elementwise_ops]))


def elementwise_out_of_scope(path: Path, opts: QuantizationOptions) -> list[str]:
    """The nodes of the recipe's ``onnx_elementwise_ops`` types whose name matches none of its
    ``onnx_elementwise_scope`` patterns (none when the scope is empty): they stay float."""
    if not opts.onnx_elementwise_ops or not opts.onnx_elementwise_scope:
        return []
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in opts.onnx_elementwise_ops
            and not any(re.search(p, n.name) for p in opts.onnx_elementwise_scope)]


def recipe_excluded(path: Path, patterns: list[str], op_types=QUANTIZED_OPS) -> list[str]:
    """The nodes of ``op_types`` whose name or the name of a weight they read (an initializer, e.g. ACmix's
    ``unfold_kernels``: named the same by either exporter) matches one of the recipe's ``patterns``. Activations'
    names are not searched: ``/conv2/fc/Conv_output_0`` would pick every consumer of the fc conv as well."""
    if not patterns:
        return []
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in op_types
            and any(re.search(p, t) for p in patterns for t in (n.name, *(i for i in n.input if i in weights)))]


def quantizable_nodes(path: Path) -> list[tuple[str, str]]:
    """(name, op type) of the nodes the quantizer would turn INT8 that fallback can exclude."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [(n.name, n.op_type) for n in model.graph.node if n.op_type in QUANTIZED_OPS]


# ops through which ONNX Runtime's QDQ quantizer carries a quantized tensor without computing on it: to keep a
# layer's input in floating point, the chain that feeds it must be excluded too
_PASS_THROUGH = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "GlobalAveragePool", "AveragePool",
                 "MaxPool", "ReduceMean", "Concat", "Split", "Slice", "Gather", "Resize", "Identity", "Pad"}


def with_feeding_chain(path: Path, names: list[str]) -> list[str]:
    """``names`` plus the pass-through nodes feeding them (see ``_PASS_THROUGH``) and the node that computes the
    chain's input when it is not itself a Conv/MatMul/Gemm (ONNX Runtime quantizes the outputs of e.g.
    LayerNormalization, Add and Softmax in QDQ form, which would quantize the excluded layer's input anyway)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    out, todo = list(dict.fromkeys(names)), [by_name[n] for n in names if n in by_name]
    while todo:
        node = todo.pop()
        for t in node.input:
            p = producer.get(t)
            if p is None or p.name in out:
                continue
            if p.op_type in _PASS_THROUGH:
                out.append(p.name)
                todo.append(p)
            elif p.op_type not in QUANTIZED_OPS:
                out.append(p.name)
    return out


def count_qdq(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}
