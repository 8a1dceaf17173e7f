"""Layers put in front of a network so that an artifact takes pixels instead of a normalised tensor.

The models expect ``(x / 255 - mean) / std`` per RGB channel (``ModelSpec.mean``/``std``). Two ways to bake that
into the artifact:

* ``--fold-normalize`` (ONNX, OpenVINO, Core ML tensor input): :func:`fold_normalize` wraps the network in an
  :class:`InputAffine` that takes **RGB pixel values in 0-255** (float, NCHW) and computes
  ``x * 1/(255·std) - mean/std`` per channel (one multiply-add, which the runtimes fuse), so an application can
  feed decoded ``uint8`` pixels cast to float with no arithmetic of its own.

* ``--image-input`` (Core ML): ``ct.ImageType`` applies ``scale * pixel + bias`` with a *single* scale for all
  channels and a per-channel bias, so it cannot divide each channel by its own std. We therefore split the
  normalisation: the ImageType does ``pixel / 255 - mean`` (``scale=1/255``, ``bias=-mean``), and
  :func:`coreml_image_front` puts a per-channel ``× 1/std`` layer in front of the network. We chose a layer over
  folding ``1/std`` into the first convolution's weights because the first layer differs per family (a
  stride-4 patch conv, an SMT stem, CrossViT's two branches behind a resize, a ResNet stem) and a separate
  multiply is exact for all of them, costs one elementwise op, and Core ML's optimiser may fuse it anyway.
  Core ML cannot run on Linux, so :func:`check_image_front` reproduces the ImageType's arithmetic in torch on the
  shipped photographs and compares with the original model on the normalised photos.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..registry import ModelSpec
from ..resources import asset

PHOTOS = ("chelsea.png", "coffee.png")


class InputAffine(nn.Module):
    """``net(x * scale + shift)`` with per-channel ``scale`` and ``shift`` buffers of shape (1, C, 1, 1)."""

    def __init__(self, net: nn.Module, scale, shift):
        super().__init__()
        self.net = net
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.scale + self.shift)


def fold_normalize(net: nn.Module, spec: ModelSpec) -> InputAffine:
    """``net`` taking RGB pixel values 0-255: ``(x / 255 - mean) / std`` as one per-channel multiply-add."""
    return InputAffine(net, [1.0 / (255.0 * s) for s in spec.std], [-m / s for m, s in zip(spec.mean, spec.std)])


def to_pixels(x: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The 0-255 pixel values whose normalisation is ``x`` (what a :func:`fold_normalize` artifact is fed)."""
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(((x * std + mean) * 255.0).astype(np.float32))


def coreml_image_params(spec: ModelSpec) -> dict:
    """The ``ct.ImageType`` arithmetic: ``pixel / 255 - mean`` (one scale, per-channel bias), RGB."""
    return {"scale": 1.0 / 255.0, "bias": [-float(m) for m in spec.mean], "color_layout": "RGB"}


def coreml_image_front(net: nn.Module, spec: ModelSpec) -> InputAffine:
    """The per-channel ``× 1/std`` that the ImageType cannot do, in front of ``net``."""
    return InputAffine(net, [1.0 / s for s in spec.std], [0.0] * len(spec.std))


def photo_pixels(name: str, size: tuple[int, int], spec: ModelSpec) -> np.ndarray:
    """A shipped photo resized and centre-cropped like the evaluation transform, as 0-255 RGB (1, 3, H, W)."""
    import dataclasses

    from ..preprocess import preprocessing_for

    pre = dataclasses.replace(preprocessing_for(spec, tuple(size)), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x = pre.load(asset(name))
    return np.ascontiguousarray(np.round(x * 255.0).astype(np.float32))


def check_image_front(original: nn.Module, front: nn.Module, spec: ModelSpec, size: tuple[int, int],
                      photos=PHOTOS) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(photo, reference, emulated)]``: the original model on the normalised photo, and ``front`` on what the
    ImageType hands it (``pixel * scale + bias``, computed here as Core ML would)."""
    params = coreml_image_params(spec)
    bias = torch.tensor(params["bias"], dtype=torch.float32).reshape(1, -1, 1, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    out = []
    with torch.no_grad():
        for name in photos:
            pixels = torch.from_numpy(photo_pixels(name, size, spec))
            ref = original((pixels / 255.0 - mean) / std).numpy()
            emulated = front(pixels * params["scale"] + bias).numpy()
            out.append((Path(name).name, ref, emulated))
    return out
