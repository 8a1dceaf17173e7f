"""Per-layer fallback: rank the layers by the harm their quantization does, map them to the artifact's nodes.

Harm is measured in PyTorch on the module that is exported (the rewritten model, whose module names the
exporters carry into node names): one layer at a time, its input is fake-quantized to INT8 per tensor with the
range seen on the calibration images, and its weights per output channel, symmetric, as the real quantizers do;
the harm is 1 - the mean cosine similarity of the model's logits with the FP32 logits on a few held-out images.
The worst layers are then kept in floating point by the backend's own mechanism (ONNX Runtime
``nodes_to_exclude``, NNCF ``ignored_scope``). Attention matrix products that are not modules are not ranked.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _fake_quant_activation(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255.0
    zero = round(-lo / scale) - 128
    q = torch.clamp(torch.round(x / scale) + zero, -128, 127)
    return (q - zero) * scale


def _fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    flat = w.reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.clamp(torch.round(flat / scale[:, None]), -127, 127) * scale[:, None]
    return q.reshape(w.shape)


@torch.no_grad()
def rank_layers(model: nn.Module, calib: np.ndarray, held: np.ndarray, batch: int = 1,
                calib_images: int = 16) -> list[dict]:
    """``[{"layer", "harm", "cosine"}]``, most harmful first."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    ranges: dict[str, list[float]] = {}

    def observe(name):
        def hook(_m, inp):
            x = inp[0]
            r = ranges.setdefault(name, [float("inf"), float("-inf")])
            r[0], r[1] = min(r[0], float(x.min())), max(r[1], float(x.max()))
        return hook

    def run(arrays):
        outs = []
        for i in range(0, len(arrays) - len(arrays) % batch or len(arrays), batch):
            chunk = arrays[i:i + batch]
            if len(chunk) < batch:
                break
            outs.append(model(torch.from_numpy(np.ascontiguousarray(chunk))).float().numpy())
        return np.concatenate(outs).reshape(-1, outs[0].shape[-1])

    handles = [m.register_forward_pre_hook(observe(n)) for n, m in layers]
    try:
        run(calib[:max(calib_images, batch)])
    finally:
        for h in handles:
            h.remove()
    ref = run(held)
    ranking = []
    for name, m in layers:
        if name not in ranges:
            continue
        lo, hi = ranges[name]
        h = m.register_forward_pre_hook(lambda _m, inp, lo=lo, hi=hi: (_fake_quant_activation(inp[0], lo, hi),)
                                        + tuple(inp[1:]))
        saved = m.weight.data.clone()
        m.weight.data.copy_(_fake_quant_weight(saved))
        try:
            out = run(held)
        finally:
            m.weight.data.copy_(saved)
            h.remove()
        denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
        cos = float(np.mean(np.where(denom > 0, (ref * out).sum(1) / np.maximum(denom, 1e-30), 0.0)))
        ranking.append({"layer": name, "harm": 1.0 - cos, "cosine": cos})
    ranking.sort(key=lambda r: -r["harm"])
    return ranking


def _onnx_module_path(node_name: str) -> str:
    """``/stages.0/blocks.1/mlp/fc1/MatMul`` or ``/layer1/layer1.0/conv1/Conv`` → the module's qualified name."""
    tokens = [t for t in node_name.split("/") if t][:-1]
    qn = ""
    for t in tokens:
        qn = t if (not qn or t.startswith(qn + ".")) else f"{qn}.{t}"
    return qn


def onnx_nodes_for(layer: str, nodes: list[tuple[str, str]]) -> list[str]:
    return [n for n, _ in nodes if _onnx_module_path(n) == layer]


def openvino_nodes_for(layer: str, nodes: list[tuple[str, str]]) -> list[str]:
    prefix = f"__module.{layer}/"
    return [n for n, _ in nodes if n.startswith(prefix + "aten::")]
