"""Helpers for proving rewrites equal to the original model (used by the test-suite, usable by users)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .recipes import recipe_rewrites
from .rewrites.base import rewrite_copy


def randomize_norm_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, and every LayerScale-like
    vector non-trivial values, so that folds and merges are tested on weights that look trained."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith(("gamma", "rate", "layer_scale", "ls")) or leaf in ("scale",):
                p.copy_(torch.rand(p.shape, generator=g) * 0.9 + 0.1)
    return model


@dataclass
class Difference:
    max_abs: float
    max_ref: float

    @property
    def rel(self) -> float:
        return self.max_abs / max(self.max_ref, 1e-12)


def compare_outputs(a: torch.Tensor, b: torch.Tensor) -> Difference:
    a, b = a.detach().float(), b.detach().float()
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return Difference(float((a - b).abs().max()), float(a.abs().max()))


def assert_rewrite_equal(
    model: nn.Module,
    fmt: str,
    names: list[str] | None = None,
    *,
    inputs: int = 2,
    seed: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    input_size=None,
) -> nn.Module:
    """Rewrite ``model`` for export format ``fmt`` (recipe rewrites, or ``names``) and check the outputs on seeded random
    inputs: ``max|diff| <= atol + rtol * max|ref|``. Returns the rewritten model. (The same rewrite as
    :func:`hvit_deploy.rewrite`, built from the layers below it, so this module stays beside ``rewriting``.)"""
    size = tuple(input_size or model.hvit_input_size)
    chosen = recipe_rewrites(model, fmt) if names is None else list(names)
    rewritten = rewrite_copy(model, fmt, chosen, input_size=size)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(inputs):
            x = torch.randn((1,) + size, generator=g)
            d = compare_outputs(model(x), rewritten(x))
            bound = atol + rtol * d.max_ref
            if not d.max_abs <= bound:
                raise AssertionError(
                    f"rewrite {names or rewritten.hvit_rewrites} for {fmt}: max|diff| {d.max_abs:.3g} > "
                    f"{bound:.3g} (max|ref| {d.max_ref:.3g})")
    return rewritten


def save_training_checkpoint(path, state_dict: dict, *, container: str | None = "model", prefix: str = "",
                             with_yacs_config: bool = False, with_args: bool = False, extra: dict | None = None):
    """Write a checkpoint laid out like an official release or training file, for loader tests.

    ``container``: ``"model"``, ``"state_dict"``, ``"state_dict_ema"``... or ``None`` for a bare state dict.
    ``prefix``: e.g. ``"module."`` as DataParallel/DDP saves it. ``with_yacs_config`` adds a yacs ``CfgNode`` (a
    class created under the module name ``yacs.config`` for the save only, as Swin-style scripts store it);
    ``with_args`` adds an ``argparse.Namespace`` (DeiT-style scripts)."""
    import argparse
    import sys
    import types

    import numpy as np

    sd = {prefix + k: v for k, v in state_dict.items()}
    obj: dict = sd if container is None else {container: sd, "epoch": 299, "max_accuracy": np.float64(81.5)}
    added = []
    if with_yacs_config:
        if "yacs.config" not in sys.modules:
            yacs, cfg_mod = types.ModuleType("yacs"), types.ModuleType("yacs.config")

            class CfgNode(dict):
                def __init__(self, init=None, new_allowed=False):
                    super().__init__(init or {})
                    self.__dict__["__immutable__"] = False
                    self.__dict__["__new_allowed__"] = new_allowed

            CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
            cfg_mod.CfgNode, yacs.config = CfgNode, cfg_mod
            sys.modules["yacs"], sys.modules["yacs.config"] = yacs, cfg_mod
            added = ["yacs", "yacs.config"]
        node = sys.modules["yacs.config"].CfgNode
        obj["config"] = node({"MODEL": node({"TYPE": "test"}), "DATA": node({"IMG_SIZE": 224})})
    if with_args:
        obj["args"] = argparse.Namespace(lr=1e-3, model="test", input_size=224)
    obj.update(extra or {})
    try:
        torch.save(obj, path)
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return path


def max_tensor_rank(model: nn.Module, input_shape) -> int:
    """Largest rank of any tensor produced while running ``model`` once on ``input_shape`` (every aten op, seen
    through the dispatcher). Core ML takes at most rank 5."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class RankMode(TorchDispatchMode):
        max_rank = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    RankMode.max_rank = max(RankMode.max_rank, t.dim())
            return out

    with RankMode(), torch.no_grad():
        model(torch.randn(tuple(input_shape)))
    return RankMode.max_rank
