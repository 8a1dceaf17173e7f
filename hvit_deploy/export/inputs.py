"""Validation inputs: seeded random tensors and a real photograph preprocessed like the model's evaluation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..registry import ModelSpec
from ..resources import asset

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def load_image(path: str | Path, size: tuple[int, int], *, crop_pct: float = 0.875,
               mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation: str = "bicubic") -> np.ndarray:
    """Resize the shorter side to size/crop_pct, centre-crop to ``size``, scale to [0, 1], normalise: (1,3,H,W)."""
    img = Image.open(path).convert("RGB")
    h, w = size
    scale = min(h, w) / crop_pct
    iw, ih = img.size
    ratio = scale / min(iw, ih)
    img = img.resize((max(w, round(iw * ratio)), max(h, round(ih * ratio))), _RESAMPLE.get(interpolation, Image.BICUBIC))
    iw, ih = img.size
    left, top = (iw - w) // 2, (ih - h) // 2
    img = img.crop((left, top, left + w, top + h))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


def validation_inputs(input_shape: tuple[int, int, int, int], spec: ModelSpec | None, *, random_inputs: int = 3,
                      seed: int = 0, real_image: bool = True) -> list[tuple[str, np.ndarray]]:
    """``[(label, array)]``: ``random_inputs`` standard-normal tensors (what a normalised image looks like to the
    network) and, when asked, the shipped photograph ``chelsea.png`` repeated over the batch."""
    B, C, H, W = input_shape
    rng = np.random.default_rng(seed)
    out = [(f"random-{i}", rng.standard_normal(input_shape, dtype=np.float32)) for i in range(random_inputs)]
    if real_image and C == 3:
        kw = {}
        if spec is not None:
            kw = dict(crop_pct=spec.crop_pct, mean=spec.mean, std=spec.std, interpolation=spec.interpolation)
        img = load_image(asset("chelsea.png"), (H, W), **kw)
        out.append(("chelsea.png", np.repeat(img, B, axis=0)))
    return out
