"""The accuracy gate: a quantized artifact against eager FP32 on held-out images.

Figures: top-1 agreement (same arg-max), top-5 agreement (mean overlap of the top-5 sets), mean and minimum cosine
similarity of the logits, and with labels the top-1 accuracy of both and the drop. Logits that are not finite
never pass.
"""
from __future__ import annotations

import numpy as np

from ..recipes import QuantGate


def _topk(a: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-a, axis=-1, kind="stable")[:, :min(k, a.shape[-1])]


def accuracy(logits: np.ndarray, labels, k: int = 1) -> float:
    labels = np.asarray(labels)
    return float(np.mean([lab in row for lab, row in zip(labels, _topk(logits, k).tolist())]))


def gate_figures(reference: np.ndarray, output: np.ndarray, labels=None) -> dict:
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(output, dtype=np.float64).reshape(len(output), -1)
    if ref.shape != out.shape:
        raise ValueError(f"artifact logits {out.shape} differ in shape from eager {ref.shape}")
    finite = bool(np.isfinite(out).all())
    fig: dict = {"images": int(len(ref)), "finite": finite}
    if not finite:
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(denom > 0, (ref * out).sum(axis=1) / np.maximum(denom, 1e-30), 0.0)
    k_ref, k_out = _topk(ref, 5), _topk(out, 5)
    fig.update(
        top1_agreement=float(np.mean(ref.argmax(1) == out.argmax(1))),
        top5_agreement=float(np.mean([len(set(a) & set(b)) / k_ref.shape[1]
                                      for a, b in zip(k_ref.tolist(), k_out.tolist())])),
        mean_cosine=float(cos.mean()),
        min_cosine=float(cos.min()),
    )
    if labels is not None:
        fig["eager_top1"] = accuracy(ref, labels)
        fig["artifact_top1"] = accuracy(out, labels)
        fig["accuracy_drop"] = fig["eager_top1"] - fig["artifact_top1"]
    return fig


def gate_failures(fig: dict, gate: QuantGate) -> list[str]:
    bad = []
    if not fig.get("finite", False):
        bad.append("non-finite logits")
    if fig["images"] < gate.min_images:
        bad.append(f"{fig['images']} held-out images < {gate.min_images}")
    if fig["top1_agreement"] < gate.min_top1_agreement:
        bad.append(f"top-1 agreement {fig['top1_agreement']:.3f} < {gate.min_top1_agreement}")
    if fig["top5_agreement"] < gate.min_top5_agreement:
        bad.append(f"top-5 agreement {fig['top5_agreement']:.3f} < {gate.min_top5_agreement}")
    if fig["mean_cosine"] < gate.min_mean_cosine:
        bad.append(f"mean cosine {fig['mean_cosine']:.4f} < {gate.min_mean_cosine}")
    if "accuracy_drop" in fig and fig["accuracy_drop"] > gate.max_accuracy_drop:
        bad.append(f"top-1 accuracy drop {fig['accuracy_drop']:.3f} > {gate.max_accuracy_drop}")
    return bad
