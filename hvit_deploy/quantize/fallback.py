"""Per-layer fallback: rank the layers by the harm their quantization does, map them to the artifact's nodes.

Harm is measured in PyTorch on the module that is exported (the rewritten model, whose module names the
exporters carry into node names): one layer at a time, its input is fake-quantized to INT8 per tensor with the
range seen on the calibration images, and its weights per output channel, symmetric, as the real quantizers do;
the harm is 1 - the mean cosine similarity of the model's logits with the FP32 logits on a few held-out images.
The worst layers are then kept in floating point by the backend's own mechanism (ONNX Runtime
``nodes_to_exclude``, NNCF ``ignored_scope``).

Matrix products that are not modules (attention's ``q @ k^T`` and ``attn @ v``) are ranked too, one group per
module that calls them (``layers.2.blocks.6.attn/matmul``): both inputs of every such product in that module
are fake-quantized per tensor with their calibration ranges, as ONNX Runtime's QDQ MatMul and NNCF's
FakeQuantize do, and the group maps to that module's MatMul nodes in the artifact (``/layers.2/blocks.6/attn/
MatMul*``, ``__module.layers.2.blocks.6.attn/aten::matmul/MatMul``).
"""
from __future__ import annotations

import contextlib
import re

import numpy as np
import torch
import torch.nn as nn

from ..utils.batching import whole_chunks

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
MATMUL_SUFFIX = "/matmul"
_MATMULS = {torch.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.bmm, torch.Tensor.__matmul__,
            torch.Tensor.__rmatmul__}


class _MatmulHook(torch.overrides.TorchFunctionMode):
    """Calls ``fn(module, index, (a, b)) -> (a, b)`` on every matrix product of two tensors, with the qualified
    name of the innermost module running (kept by forward hooks) and the product's index within that call."""

    def __init__(self, model: nn.Module, fn):
        super().__init__()
        self.fn, self.stack, self.count = fn, [], {}
        self.handles = []
        for name, m in model.named_modules():
            self.handles.append(m.register_forward_pre_hook(lambda _m, _i, n=name: self._enter(n)))
            self.handles.append(m.register_forward_hook(lambda _m, _i, _o, n=name: self._leave(n)))

    def _enter(self, name):
        self.stack.append(name)
        self.count[name] = 0

    def _leave(self, name):
        if self.stack and self.stack[-1] == name:
            self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MATMULS and len(args) >= 2 and all(isinstance(a, torch.Tensor) for a in args[:2]) \
                and not any(isinstance(a, nn.Parameter) for a in args[:2]) and self.stack:
            mod = self.stack[-1]
            i = self.count[mod] = self.count.get(mod, 0) + 1
            a, b = self.fn(mod, i - 1, (args[0], args[1]))
            args = (a, b, *args[2:])
        return func(*args, **kwargs)

    def remove(self):
        for h in self.handles:
            h.remove()


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


class _Sensitivity:
    """One model's INT8 sensitivity, simulated in PyTorch: the calibration ranges of every layer's input and of
    every module's matrix products (observed once, on ``calib``), and the logits with any set of those layers and
    matmul groups fake-quantized together (:meth:`quantized`)."""

    def __init__(self, model: nn.Module, calib: np.ndarray, batch: int, calib_images: int):
        self.model, self.batch = model, batch
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
        self.mods = dict(self.layers)
        self.ranges: dict[str, list[float]] = {}
        self.mm_ranges: dict[str, dict[tuple[int, int], list[float]]] = {}

        def observe(name):
            def hook(_m, inp):
                x = inp[0]
                r = self.ranges.setdefault(name, [float("inf"), float("-inf")])
                r[0], r[1] = min(r[0], float(x.min())), max(r[1], float(x.max()))
            return hook

        def observe_mm(mod, i, ab):
            for j, t in enumerate(ab):
                r = self.mm_ranges.setdefault(mod, {}).setdefault((i, j), [float("inf"), float("-inf")])
                r[0], r[1] = min(r[0], float(t.min())), max(r[1], float(t.max()))
            return ab

        handles = [m.register_forward_pre_hook(observe(n)) for n, m in self.layers]
        hook = _MatmulHook(model, observe_mm)
        try:
            with hook:
                self.run(calib[:max(calib_images, batch)])
        finally:
            hook.remove()
            for h in handles:
                h.remove()
        # what can be ranked: the layers that ran, then one matmul group per module that multiplies activations
        self.names = [n for n, _ in self.layers if n in self.ranges] + [mod + MATMUL_SUFFIX for mod in self.mm_ranges]

    def run(self, arrays: np.ndarray) -> np.ndarray:
        """The logits, one row per image (whole batches only, as the quantizers calibrate)."""
        outs = [self.model(torch.from_numpy(c)).float().numpy() for c in whole_chunks(arrays, self.batch)]
        return np.concatenate(outs).reshape(-1, outs[0].shape[-1])

    def quantized(self, names: list[str], held: np.ndarray) -> np.ndarray:
        """The logits on ``held`` with ``names`` fake-quantized: a layer's input per tensor with its range and its
        weights per output channel; a matmul group's products, both inputs per tensor with their ranges."""
        convs = [n for n in names if not n.endswith(MATMUL_SUFFIX)]
        mm_mods = {n[:-len(MATMUL_SUFFIX)] for n in names if n.endswith(MATMUL_SUFFIX)}
        saved = {n: self.mods[n].weight.data.clone() for n in convs}
        hooks = [self.mods[n].register_forward_pre_hook(
            lambda _m, inp, lo=self.ranges[n][0], hi=self.ranges[n][1]:
            (_fake_quant_activation(inp[0], lo, hi),) + tuple(inp[1:])) for n in convs]

        def fq(mod, i, ab):
            r = self.mm_ranges.get(mod, {}) if mod in mm_mods else {}
            return tuple(_fake_quant_activation(t, *r[(i, j)]) if (i, j) in r else t for j, t in enumerate(ab))

        mm_hook = _MatmulHook(self.model, fq) if mm_mods else contextlib.nullcontext()
        try:
            for n in convs:
                self.mods[n].weight.data.copy_(_fake_quant_weight(saved[n]))
            with mm_hook:
                return self.run(held)
        finally:
            if mm_mods:
                mm_hook.remove()
            for n in convs:
                self.mods[n].weight.data.copy_(saved[n])
            for h in hooks:
                h.remove()


def _harm(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(1 - mean cosine of the rows, mean cosine)."""
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = float(np.mean(np.where(denom > 0, (ref * out).sum(1) / np.maximum(denom, 1e-30), 0.0)))
    return 1.0 - cos, cos


@torch.no_grad()
def rank_layers(model: nn.Module, calib: np.ndarray, held: np.ndarray, batch: int = 1,
                calib_images: int = 16, candidates: int | None = None) -> list[dict]:
    """``[{"layer", "kind", "harm", "cosine", "local_error"}]``, most harmful first.

    Every layer (and matmul group) costs one forward pass over ``held`` to measure end to end, which is minutes
    on a slow eager model (ACmix: ~80 convolutions). With ``candidates`` the layers are first pre-ranked in ONE
    pass by their local error (``||f(q(x), q(w)) - f(x, w)||^2 / ||f(x, w)||^2`` at the layer itself, the
    layer's SQNR), and only the ``candidates`` worst are measured end to end; the others follow, by local error,
    without a ``harm``."""
    sens = _Sensitivity(model, calib, batch, calib_images)
    kinds = {n: ("conv" if isinstance(m, (nn.Conv1d, nn.Conv2d)) else "linear") for n, m in sens.layers}
    entries = list(sens.names)
    local: dict[str, float] = {}
    if candidates is not None and len(entries) > candidates:
        local = _local_errors(model, sens.layers, sens.ranges, sens.mm_ranges, sens.run, held)
        entries.sort(key=lambda n: -local.get(n, 0.0))
    measured, rest = (entries[:candidates], entries[candidates:]) if local else (entries, [])
    ref = sens.run(held)
    ranking = []
    for name in measured:
        out = sens.quantized([name], held)
        if name.endswith(MATMUL_SUFFIX):
            mod = name[:-len(MATMUL_SUFFIX)]
            entry = {"layer": name, "module": mod, "kind": "matmul",
                     "products": len({i for i, _ in sens.mm_ranges[mod]})}
        else:
            entry = {"layer": name, "kind": kinds[name]}
        h_, cos = _harm(ref, out)
        entry.update(harm=h_, cosine=cos)
        if local:
            entry["local_error"] = local.get(name, 0.0)
        ranking.append(entry)
    ranking.sort(key=lambda r: -r["harm"])
    for name in rest:  # not measured end to end: after the measured ones, by local error
        mm = name.endswith(MATMUL_SUFFIX)
        e = {"layer": name, "kind": "matmul" if mm else kinds[name], "harm": None, "local_error": local.get(name, 0.0)}
        if mm:
            e["module"] = name[:-len(MATMUL_SUFFIX)]
        ranking.append(e)
    return ranking


def role_groups(names: list[str]) -> dict[str, list[str]]:
    """Layers of one role: names equal but for their numbers (``layer2.1.conv2.conv1`` and ``layer3.0.conv2.conv3``
    are both ``layer*.*.conv*.conv*``, the blocks' ``attn.qkv`` of every stage ``layers.*.blocks.*.attn.qkv``),
    with at least two members, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(re.sub(r"\d+", "*", n), []).append(n)
    return {k: v for k, v in groups.items() if len(v) > 1}


@torch.no_grad()
def rank_groups(model: nn.Module, calib: np.ndarray, held: np.ndarray, batch: int = 1,
                calib_images: int = 16) -> list[dict]:
    """``[{"layer": role, "kind": "group", "members", "harm", "cosine"}]``, most harmful first: each role group
    (:func:`role_groups` of the layers and matmul groups :func:`rank_layers` ranks) quantized as a whole, the rest
    float. Where INT8's error is spread over many layers of one role, no single layer stands out and keeping the
    worst few singly does not pass the gate; the whole role can."""
    sens = _Sensitivity(model, calib, batch, calib_images)
    ref = sens.run(held)
    ranking = []
    for role, members in role_groups(sens.names).items():
        h_, cos = _harm(ref, sens.quantized(members, held))
        ranking.append({"layer": role, "kind": "group", "members": members, "harm": h_, "cosine": cos})
    ranking.sort(key=lambda r: -r["harm"])
    return ranking


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).float() ** 2).sum() / ((b.float() ** 2).sum().clamp_min(1e-30)))


def _local_errors(model, layers, ranges, mm_ranges, run, held) -> dict[str, float]:
    """Mean local relative error of each layer's (and matmul group's) quantized output, in one pass."""
    errs: dict[str, list[float]] = {}
    handles = []

    def layer_hook(name, m):
        lo, hi = ranges[name]

        def hook(_m, inp, out):
            x = _fake_quant_activation(inp[0], lo, hi)
            w = _fake_quant_weight(m.weight)
            if isinstance(m, nn.Linear):
                q = torch.nn.functional.linear(x, w, m.bias)
            else:
                q = m._conv_forward(x, w, m.bias)
            errs.setdefault(name, []).append(_rel(q, out))
        return hook

    def mm_hook(mod, i, ab):
        r = mm_ranges.get(mod, {})
        if (i, 0) in r and (i, 1) in r:
            qa, qb = _fake_quant_activation(ab[0], *r[(i, 0)]), _fake_quant_activation(ab[1], *r[(i, 1)])
            errs.setdefault(mod + MATMUL_SUFFIX, []).append(_rel(torch.matmul(qa, qb), torch.matmul(ab[0], ab[1])))
        return ab

    for name, m in layers:
        if name in ranges:
            handles.append(m.register_forward_hook(layer_hook(name, m)))
    hook = _MatmulHook(model, mm_hook)
    try:
        with hook:
            run(held)
    finally:
        hook.remove()
        for h in handles:
            h.remove()
    return {k: float(np.mean(v)) for k, v in errs.items()}


def _onnx_module_path(node_name: str) -> str:
    """``/stages.0/blocks.1/mlp/fc1/MatMul`` or ``/layer1/layer1.0/conv1/Conv`` → the module's qualified name."""
    tokens = [t for t in node_name.split("/") if t][:-1]
    qn = ""
    for t in tokens:
        qn = t if (not qn or t.startswith(qn + ".")) else f"{qn}.{t}"
    return qn


def _module_of(layer: str) -> tuple[str, bool]:
    if layer.endswith(MATMUL_SUFFIX):
        return layer[:-len(MATMUL_SUFFIX)], True
    return layer, False


def onnx_nodes_for(layer: str, nodes: list[tuple[str, str]]) -> list[str]:
    """The artifact's nodes of a ranked layer; for a matmul group, the MatMul nodes of its module only."""
    mod, mm = _module_of(layer)
    return [n for n, op in nodes if _onnx_module_path(n) == mod and (not mm or op == "MatMul")]


def openvino_nodes_for(layer: str, nodes: list[tuple[str, str]]) -> list[str]:
    mod, mm = _module_of(layer)
    prefix = f"__module.{mod}/aten::" if mod else "aten::"   # the root module's own ops carry no module prefix
    return [n for n, op in nodes if n.startswith(prefix) and (not mm or op == "MatMul")]
