"""INT8 ExecuTorch ``.pte`` and LiteRT ``.tflite`` through PT2E (``torch.export`` post-training quantization).

Neither format can be re-quantized from its FP32 file: both quantize the PyTorch graph before conversion. So the
module the FP32 artifact was exported from (:attr:`~.stage.GateInputs.module`, the rewritten model) is exported
again with ``torch.export``, annotated by the backend's quantizer, calibrated on the calibration images
(``prepare_pt2e``: observers; then ``convert_pt2e``: quantize/dequantize pairs) and converted:

* ``executorch``: ExecuTorch's ``XNNPACKQuantizer`` with ``get_symmetric_quantization_config(is_per_channel=True)``
  (INT8 activations per tensor, INT8 symmetric weights per output channel), lowered with the XNNPACK partitioner
  as the FP32 export is; the share of the graph delegated is recorded again, for the INT8 program.
* ``litert``: litert-torch's ``PT2EQuantizer`` with its ``get_symmetric_quantization_config(is_per_channel=True)``,
  converted with ``QuantConfig(pt2e_quantizer=...)`` (static INT8 kernels). The converter makes the model's input
  and output INT8 when the first and last ops are quantized; the ``litert`` runtime then quantizes the float input
  and dequantizes the output with the scales the model carries (recorded as ``io`` in the settings).

Neither quantizer takes the products of two activations (attention's ``q @ k^T``), so those stay float.

The per-layer fallback keeps a ranked layer in float by leaving its nodes out of the quantizer's annotation (a
node filter: XNNPACK's ``set_filter_function``, the same filter for litert-torch's quantizer); the nodes are the
exported graph's, found by the module they came from (``nn_module_stack``), and their names are the same in every
export of the same module. The metadata table goes with the artifact as with FP32 (the ``.pte.json`` side file,
the ``.tflite``'s own metadata), copied from the FP32 artifact.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

# graph nodes never worth keeping track of (not computation) or never quantized by these quantizers
_SKIP_TARGETS = ("getitem",)
_PRODUCTS = ("matmul", "bmm")


def _op_name(node) -> str:
    t = node.target
    return getattr(t, "__name__", str(t)).split(".")[0]


def _module_of(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def export_graph(module, example):
    """``torch.export`` of ``module`` as a graph module (the input of ``prepare_pt2e``)."""
    import torch

    with torch.no_grad():
        return torch.export.export(module.eval(), (example,), strict=False).module()


def graph_nodes(graph_module) -> list[tuple[str, str, str]]:
    """``(node name, op, module)`` of the graph's ops that a quantizer may annotate (not the products of two
    activations, which neither quantizer takes)."""
    out = []
    for n in graph_module.graph.nodes:
        if n.op != "call_function":
            continue
        op = _op_name(n)
        if op in _SKIP_TARGETS or op in _PRODUCTS:
            continue
        out.append((n.name, op, _module_of(n)))
    return out


def nodes_for(layer: str, nodes: list[tuple[str, str, str]]) -> list[str]:
    """A ranked layer's nodes in the exported graph (the ops of that module); a matmul group has none (the
    quantizers leave attention's products in float already)."""
    if layer.endswith("/matmul"):
        return []
    return [name for name, _, mod in nodes if mod == layer]


def nodes_matching(patterns: list[str], nodes: list[tuple[str, str, str]]) -> list[str]:
    """The nodes whose module path (``layer1.0.conv2.conv1``) matches one of the recipe's regular expressions
    (``re.fullmatch``)."""
    import re

    rx = [re.compile(p) for p in patterns]
    return [name for name, _, mod in nodes if mod and any(r.fullmatch(mod) for r in rx)]


def _calibrate(prepared, arrays: np.ndarray, batch: int) -> int:
    import torch

    from ..utils.batching import whole_chunks

    chunks = whole_chunks(arrays, batch)
    with torch.no_grad():
        for c in chunks:
            prepared(torch.from_numpy(np.ascontiguousarray(c)))
    return len(chunks)


def _quantized(module, example, quantizer, arrays, batch, fold: bool = True):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(export_graph(module, example), quantizer)
    n = _calibrate(prepared, arrays, batch)
    return convert_pt2e(prepared, fold_quantize=fold), n


def _excluding(excluded: list[str]):
    skip = frozenset(excluded)
    return lambda n: n.name not in skip


def xnnpack_quantizer(excluded: list[str]):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    if excluded:
        q.set_filter_function(_excluding(excluded))
    return q


def litert_quantizer(excluded: list[str]):
    from litert_torch.quantize import pt2e_quantizer as lq

    class Quantizer(lq.PT2EQuantizer):
        """litert-torch's quantizer with the nodes kept in float left out of the annotation (it has no filter
        setting of its own; its global annotation takes one)."""

        def _annotate_for_static_quantization_config(self, model):
            return self._annotate_all_static_patterns(model, self.global_config, _excluding(excluded))

    return Quantizer().set_global(lq.get_symmetric_quantization_config(is_per_channel=True))


def _versions(*dists: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for d in dists:
        try:
            out.append(f"{d} {version(d)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def _settings(quantizer: str, dists: tuple[str, ...], subset: int, excluded: list[str]) -> dict:
    return {"quantizer": f"{quantizer} ({_versions(*dists)})", "flow": "torch.export -> prepare_pt2e -> "
            "calibrate -> convert_pt2e", "per_channel_weights": True, "symmetric": True,
            "activations": "int8 per tensor (HistogramObserver)", "weights": "int8 per output channel",
            "subset_size": subset, "nodes_in_fp": list(excluded)}


def quantize_executorch(module, example, fp32_pte: Path, target: Path, calib: np.ndarray, batch: int,
                        excluded: list[str]) -> dict:
    """The INT8 ``.pte`` at ``target`` (and its metadata side file, the FP32 one's table)."""
    import torch

    from ..formats import executorch as et
    from ..formats.quiet import captured

    with captured():
        converted, n = _quantized(module, example, xnnpack_quantizer(excluded), calib, batch)
        edge = et.lower_program(torch.export.export(converted, (example,), strict=False))
        facts = et.delegation(edge)
        target.write_bytes(edge.to_executorch().buffer)
    if et.side_path(fp32_pte).is_file():
        shutil.copyfile(et.side_path(fp32_pte), et.side_path(target))
    s = _settings("XNNPACKQuantizer, get_symmetric_quantization_config", ("executorch", "torchao"), n, excluded)
    s["delegation"] = facts
    return s


def quantize_litert(module, example, fp32_tflite: Path, target: Path, calib: np.ndarray, batch: int,
                    excluded: list[str]) -> dict:
    """The INT8 ``.tflite`` at ``target``, with the FP32 one's metadata table."""
    import torch

    from ..formats import litert as lt
    from ..formats.quiet import captured

    quantizer = litert_quantizer(excluded)
    with captured(native=True):   # the MLIR converter logs a line per op it cannot annotate to descriptor 2
        import litert_torch
        from litert_torch.quantize.quant_config import QuantConfig

        converted, n = _quantized(module, example, quantizer, calib, batch, fold=False)
        with torch.no_grad():
            edge = litert_torch.convert(converted, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
        edge.export(str(target))
    lt.write_metadata(target, lt.read_tflite_metadata(fp32_tflite))
    s = _settings("litert_torch PT2EQuantizer, get_symmetric_quantization_config", ("litert-torch", "torchao"), n,
                  excluded)
    s["io"] = io_types(target)
    s["op_types"] = lt.op_histogram(target)
    return s


def io_types(tflite: Path) -> dict:
    """The ``.tflite``'s input and output types and, for INT8 ones, the scale and zero point the runtime uses."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tflite))

    def one(d):
        scale, zero = d["quantization"]
        kind = np.dtype(d["dtype"]).name
        return {"dtype": kind, **({"scale": float(scale), "zero_point": int(zero)} if kind != "float32" else {})}
    return {"input": one(it.get_input_details()[0]), "outputs": [one(d) for d in it.get_output_details()]}
