"""Backbones: the four stage outputs of a hierarchical model, as named outputs ``stage1..stage4`` (NCHW).

Each family declares where its stages end on its :class:`~hvit_deploy.registry.ModelSpec`
(``feature_stages``, in its family file: e.g. SMT's ``norm1..norm4``, the last block of Twins' ``blocks.i``);
:class:`StageFeatures` runs the model's ``forward_features`` with forward hooks on those modules and returns their
outputs, turned into NCHW maps at strides 4, 8, 16 and 32. Token outputs (B, N, C) are reshaped with the stage's
static height and width, so the form stays export-friendly (and the batch may be -1). The hooks see the rewritten
modules too, as rewrites keep module names. A family without ``feature_stages`` (CrossViT: two token branches, no
pyramid) has no such outputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import HvitError
from ..registry import MODELS, ModelSpec, get_spec

STAGE_NAMES = ("stage1", "stage2", "stage3", "stage4")
STRIDES = (4, 8, 16, 32)


class FeaturesError(HvitError):
    """A backbone export that the model or the resolution cannot take."""


def check_features(spec: ModelSpec, size: tuple[int, int, int]) -> None:
    """Refuse a family without a pyramid, or a resolution whose stages would not tile (one line each)."""
    if spec.feature_stages is None:
        raise FeaturesError(f"{spec.name}: {spec.family} has no feature pyramid (no stage outputs); "
                            f"--features takes {', '.join(feature_families())}")
    _, h, w = size
    m = spec.input_multiple or 32
    if h % m or w % m:
        why = ("its 7x7 windows at stride 32" if m == 224 else "its four stride-2 stages")
        raise FeaturesError(f"{spec.name} cannot take {h}x{w} features: height and width must be multiples of "
                            f"{m} ({why})")


def feature_families() -> list[str]:
    """The families whose variants declare their stage modules (``ModelSpec.feature_stages``)."""
    return list(dict.fromkeys(s.family for s in MODELS.values() if s.feature_stages is not None))


def _stage_modules(model: nn.Module) -> list[tuple[str, str]]:
    """``[(module name, layout)]`` for the four stages, as the model's spec declares them; layout is "nchw",
    "nhwc" or "tokens"."""
    name = getattr(model, "hvit_name", None)
    stages = get_spec(name).feature_stages if name is not None else None
    if stages is None:
        raise FeaturesError(f"{name or 'this model'} has no stage outputs")
    return stages(model)


class StageFeatures(nn.Module):
    """``model``'s four stage outputs as a tuple of NCHW tensors (``stage1..stage4``)."""

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int], channels: list[int] | None = None):
        super().__init__()
        self.model = model
        _, h, w = input_size
        self.sizes = [(h // s, w // s) for s in STRIDES]
        self.stages = _stage_modules(model)
        self.channels = channels or self._probe_channels(input_size)

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``forward_features`` with hooks on the stage modules for this call only (so wrapping a model twice,
        or the model as written and a rewritten copy, never stacks hooks)."""
        outs: list[torch.Tensor] = []
        modules = dict(self.model.named_modules())
        handles = [modules[name].register_forward_hook(
            lambda mod, args, output: outs.append(output[0] if isinstance(output, tuple) else output))
            for name, _ in self.stages]
        try:
            self.model.forward_features(x)
        finally:
            for h in handles:
                h.remove()
        if len(outs) != len(self.stages):
            raise FeaturesError(f"expected {len(self.stages)} stage outputs, got {len(outs)}")
        return outs

    def _probe_channels(self, input_size) -> list[int]:
        with torch.no_grad():
            outs = self._run(torch.zeros((1,) + tuple(input_size)))
        return [int(o.shape[1] if layout == "nchw" else o.shape[-1]) for o, (_, layout) in zip(outs, self.stages)]

    def forward(self, x: torch.Tensor):
        outs = self._run(x)
        maps = []
        for t, (_, layout), (h, w), c in zip(outs, self.stages, self.sizes, self.channels):
            if layout == "tokens":
                t = t.reshape(-1, h, w, c).permute(0, 3, 1, 2)
            elif layout == "nhwc":
                t = t.permute(0, 3, 1, 2)
            maps.append(t)
        return tuple(maps)
