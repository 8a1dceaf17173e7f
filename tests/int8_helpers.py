"""Images made from the two shipped photos, and models whose logits mean something on them.

Random-weight models give nearly tied logits, so a top-1 figure on them says little. ``fitted_model`` fits the
classifier head (ridge regression on the pooled features) so that the two photos' crops fall in two classes by a
clear margin, with a fixed, well-spaced order of the other classes so that top-5 is meaningful too.
``plant_outlier`` then scales one channel of the head's input by 1000 (and the head's weights by 1/1000), which
changes nothing in FP32 but ruins a per-tensor INT8 quantization of the head's input.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from hvit_deploy import create_model
from hvit_deploy.preprocess import preprocessing_for
from hvit_deploy.resources import asset

CLASSES = (("cat", "chelsea.png"), ("coffee", "coffee.png"))


def make_images(root: Path, per_class: int, seed: int, labelled: bool = True, ext: str = ".png") -> list[Path]:
    """``per_class`` crops/flips/colour-jittered copies of each photo, in ``root/<class>/`` (or flat)."""
    rng = np.random.default_rng(seed)
    paths = []
    for cls, name in CLASSES:
        src = Image.open(asset(name)).convert("RGB")
        w, h = src.size
        folder = root / cls if labelled else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            s = rng.uniform(0.6, 1.0)
            cw, ch = int(w * s), int(h * s)
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((160, 160), Image.BILINEAR)
            if rng.random() < 0.5:
                img = ImageOps.mirror(img)
            img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
            img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
            p = folder / f"{cls}_{seed}_{i:03d}{ext}"
            img.save(p)
            paths.append(p)
    return paths


def _head(model) -> torch.nn.Linear:
    return model.head if isinstance(getattr(model, "head", None), torch.nn.Linear) else model.fc


@torch.no_grad()
def fitted_model(name: str, input_size: int, images: list[Path], seed: int = 0, margin: float = 8.0):
    """``name`` with its head fitted so that images of class k (folder name order) score ``margin`` above the
    rest; other classes follow a fixed order spaced 0.5 apart."""
    torch.manual_seed(seed)
    model = create_model(name, input_size=input_size)
    pre = preprocessing_for(model.hvit_name, input_size)
    head = _head(model)
    feats = []
    hook = head.register_forward_pre_hook(lambda m, inp: feats.append(inp[0].detach().clone()))
    x = torch.from_numpy(pre(images))
    for i in range(len(x)):
        model(x[i:i + 1])
    hook.remove()
    X = torch.cat(feats).double()
    labels = [0 if p.parent.name == "cat" or p.name.startswith("cat") else 1 for p in images]
    n_cls = head.out_features
    # the two photo classes on top (the true one by `margin`), then 8 classes 0.5 apart, then the rest tied low
    prior = torch.full((n_cls,), -6.0, dtype=torch.float64)
    others = (torch.randperm(n_cls - len(CLASSES)) + len(CLASSES))[:8]
    prior[others] = -1.0 - 0.5 * torch.arange(8, dtype=torch.float64)
    prior[:len(CLASSES)] = 0.0
    T = prior.repeat(len(images), 1)
    for i, lab in enumerate(labels):
        T[i, lab] += margin
    mu, sd = X.mean(0), X.std(0).clamp_min(1e-6)
    Z = (X - mu) / sd
    A = torch.cat([Z, torch.ones(len(Z), 1, dtype=torch.float64)], 1)
    lam = 1e-2 * len(Z)
    W = torch.linalg.solve(A.T @ A + lam * torch.eye(A.shape[1], dtype=torch.float64), A.T @ T)
    w = (W[:-1] / sd[:, None]).T
    b = W[-1] - (mu[:, None] * W[:-1] / sd[:, None]).sum(0)
    head.weight.copy_(w.float())
    head.bias.copy_(b.float())
    return model


@torch.no_grad()
def plant_outlier(model, channel: int = 3, factor: float = 1000.0):
    """Scale one channel of the final norm (weight and bias) by ``factor`` and the head's input column by
    1/``factor``: the same function in FP32, an activation outlier for INT8."""
    norm, head = model.norm, _head(model)
    norm.weight[channel] *= factor
    norm.bias[channel] *= factor
    head.weight[:, channel] /= factor
    return model
