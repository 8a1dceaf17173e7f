"""Validation inputs: seeded random tensors and a real photograph preprocessed like the model's evaluation."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..registry import ModelSpec
from ..resources import asset


def load_image(path: str | Path, size: tuple[int, int], *, spec: ModelSpec | None = None) -> np.ndarray:
    """``path`` through ``spec``'s evaluation transform (:mod:`hvit_deploy.preprocess`): ``(1, 3, H, W)``."""
    from ..preprocess import Preprocessing, preprocessing_for

    if spec is None:  # the ImageNet default: shorter side to size/0.875, bicubic, centre crop
        import math

        pre = Preprocessing(size=tuple(size), resize="shorter", resize_to=int(math.floor(min(size) / 0.875)),
                            crop_pct=0.875, interpolation="bicubic", mean=(0.485, 0.456, 0.406),
                            std=(0.229, 0.224, 0.225))
    else:
        pre = preprocessing_for(spec, tuple(size))
    return pre.load(path)


def validation_inputs(input_shape: tuple[int, int, int, int], spec: ModelSpec | None, *, random_inputs: int = 3,
                      seed: int = 0, real_image: bool = True) -> list[tuple[str, np.ndarray]]:
    """``[(label, array)]``: ``random_inputs`` standard-normal tensors (what a normalised image looks like to the
    network) and, when asked, the shipped photograph ``chelsea.png`` repeated over the batch."""
    B, C, H, W = input_shape
    rng = np.random.default_rng(seed)
    out = [(f"random-{i}", rng.standard_normal(input_shape, dtype=np.float32)) for i in range(random_inputs)]
    if real_image and C == 3:
        img = load_image(asset("chelsea.png"), (H, W), spec=spec)
        out.append(("chelsea.png", np.repeat(img, B, axis=0)))
    return out
