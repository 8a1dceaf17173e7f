"""How close outputs are to a reference (eager PyTorch): error, cosine similarity and top-k agreement.

The one metrics module: export validation (:func:`compare`, :func:`failures`), the INT8 accuracy gate
(:mod:`hvit_deploy.quantize.gate`) and the runtimes' own checks before timing all compute their figures here, so a
cosine or a top-k means the same thing everywhere.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np


class Tolerance(Protocol):  # hvit_deploy.recipes.Tolerance (a recipe's per-format tolerances) has these fields
    atol: float
    rtol: float
    min_cosine: float
    min_top1: float
    min_top5: float


def cosine_rows(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of two (N, ...) arrays, in float64. Two all-zero rows agree (1.0); a zero row
    against a non-zero one does not (0.0)."""
    r2 = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    o2 = np.asarray(output, dtype=np.float64).reshape(len(output), -1)
    nr, no = np.linalg.norm(r2, axis=1), np.linalg.norm(o2, axis=1)
    denom = nr * no
    both_zero = (nr == 0) & (no == 0)
    return np.where(denom > 0, (r2 * o2).sum(axis=1) / np.maximum(denom, 1e-300), np.where(both_zero, 1.0, 0.0))


def topk(a: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries along the last axis, largest first (stable on ties)."""
    return np.argsort(-a, axis=-1, kind="stable")[..., :min(k, a.shape[-1])]


@dataclass
class Figures:
    max_abs: float
    max_rel: float          # max |diff| / max |reference|
    min_cosine: float
    top1: float             # fraction of samples whose top-1 class agrees (ties within atol count as agreeing)
    top5: float             # mean overlap of the top-5 sets
    inputs: int
    finite: bool = True     # every output value finite (NaN or Inf never validates)

    def as_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in asdict(self).items()}


def compare(pairs: list[tuple[np.ndarray, np.ndarray]], tie_atol: float = 1e-5) -> Figures:
    """Worst-case figures over ``[(reference, output)]`` pairs of (B, classes) arrays."""
    max_abs = max_ref = 0.0
    cosines, top1, top5 = [], [], []
    finite = True
    for ref, out in pairs:
        ref = np.asarray(ref, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            raise ValueError(f"output shape {out.shape} differs from PyTorch's {ref.shape}")
        if not np.isfinite(out).all():  # NaN compares false with everything: judge on the finite part, flag it
            finite = False
            out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        diff = np.abs(ref - out)
        max_abs = max(max_abs, float(diff.max(initial=0.0)))
        max_ref = max(max_ref, float(np.abs(ref).max(initial=0.0)))
        cosines.extend(cosine_rows(ref, out).tolist())
        if ref.ndim == 2 and ref.shape[1] > 1:
            best = ref.max(axis=1)
            pick = out.argmax(axis=1)
            top1.extend((ref[np.arange(len(pick)), pick] >= best - tie_atol).tolist())
            k_ref, k_out = topk(ref, 5), topk(out, 5)
            top5.extend(len(set(a) & set(b)) / k_ref.shape[1] for a, b in zip(k_ref.tolist(), k_out.tolist()))
    return Figures(
        max_abs=max_abs,
        max_rel=max_abs / max(max_ref, 1e-30),
        min_cosine=float(min(cosines)) if cosines else 1.0,
        top1=float(np.mean(top1)) if top1 else 1.0,
        top5=float(np.mean(top5)) if top5 else 1.0,
        inputs=len(pairs),
        finite=finite,
    )


def failures(fig: Figures, tol: Tolerance, max_ref: float | None = None) -> list[str]:
    """What is out of tolerance, in words; empty when the export validates."""
    bad = [] if fig.finite else ["outputs hold NaN or Inf"]
    ref_scale = fig.max_abs / fig.max_rel if fig.max_rel > 0 else 0.0
    bound = tol.atol + tol.rtol * (max_ref if max_ref is not None else ref_scale)
    if fig.max_abs > bound:
        bad.append(f"max|diff| {fig.max_abs:.3g} > {bound:.3g}")
    if fig.min_cosine < tol.min_cosine:
        bad.append(f"cosine {fig.min_cosine:.6f} < {tol.min_cosine}")
    if fig.top1 < tol.min_top1:
        bad.append(f"top-1 agreement {fig.top1:.0%} < {tol.min_top1:.0%}")
    if fig.top5 < tol.min_top5:
        bad.append(f"top-5 overlap {fig.top5:.0%} < {tol.min_top5:.0%}")
    return bad
