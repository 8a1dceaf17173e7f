"""Backbones: the four stage outputs of a hierarchical model, as named outputs ``stage1..stage4`` (NCHW).

Each family's stage ends at a known module (below); :class:`StageFeatures` runs the model's ``forward_features``
with forward hooks on those modules and returns their outputs, turned into NCHW maps at strides 4, 8, 16 and 32.
Token outputs (B, N, C) are reshaped with the stage's static height and width, so the form stays export-friendly
(and the batch may be -1). The hooks see the rewritten modules too, as rewrites keep module names.

* SMT: ``norm1..norm4`` (each stage ends with its own LayerNorm, as the official detection backbone returns),
* Twins-PCPVT/SVT: the last block of ``blocks.i`` (the official detection code returns the stages un-normed),
* EfficientMod: the last block of ``layers.i`` before its downsample (channels-last, or NCHW after
  ``efficientmod.nchw``),
* ACmix-Swin: the last block of ``layers.i`` before its patch merging (tokens),
* ACmix-ResNet: ``layer1..layer4``.

CrossViT has two token branches and no pyramid, so it has no such outputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import HvitError
from ..registry import ModelSpec

STAGE_NAMES = ("stage1", "stage2", "stage3", "stage4")
STRIDES = (4, 8, 16, 32)
FEATURE_FAMILIES = ("smt", "twins", "efficientmod", "acmix")


class FeaturesError(HvitError):
    """A backbone export that the model or the resolution cannot take."""


def check_features(spec: ModelSpec, size: tuple[int, int, int]) -> None:
    """Refuse a family without a pyramid, or a resolution whose stages would not tile (one line each)."""
    if spec.family not in FEATURE_FAMILIES:
        raise FeaturesError(f"{spec.name}: {spec.family} has no feature pyramid (two token branches, no stages); "
                            f"--features takes {', '.join(FEATURE_FAMILIES)}")
    _, h, w = size
    m = spec.input_multiple or 32
    if h % m or w % m:
        why = ("its 7x7 windows at stride 32" if m == 224 else "its four stride-2 stages")
        raise FeaturesError(f"{spec.name} cannot take {h}x{w} features: height and width must be multiples of "
                            f"{m} ({why})")


def _stage_modules(model: nn.Module) -> list[tuple[str, str]]:
    """``[(module name, layout)]`` for the four stages; layout is "nchw", "nhwc" or "tokens"."""
    family = getattr(model, "hvit_family", None)
    if family == "smt":
        return [(f"norm{i + 1}", "tokens") for i in range(4)]
    if family == "twins":
        return [(f"blocks.{i}.{len(model.blocks[i]) - 1}", "tokens") for i in range(4)]
    if family == "efficientmod":
        layout = "nchw" if type(model).__name__.startswith("Nchw") else "nhwc"
        return [(f"layers.{i}.blocks.{len(model.layers[i].blocks) - 1}", layout) for i in range(4)]
    if family == "acmix" and hasattr(model, "layers"):
        return [(f"layers.{i}.blocks.{len(model.layers[i].blocks) - 1}", "tokens") for i in range(4)]
    if family == "acmix":
        return [(f"layer{i + 1}", "nchw") for i in range(4)]
    raise FeaturesError(f"{getattr(model, 'hvit_name', 'this model')} has no stage outputs")


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
