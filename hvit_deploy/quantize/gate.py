"""The accuracy gate: a quantized artifact against eager FP32 on held-out images.

Figures: top-1 agreement (same arg-max), top-5 agreement (mean overlap of the top-5 sets), mean and minimum cosine
similarity of the logits, and with labels the top-1 accuracy of both and the drop. Logits that are not finite
never pass.

Near ties. Where eager FP32 itself barely separates two classes, INT8's rounding decides between them and a strict
arg-max comparison counts a coin toss as an error. Networks with random weights are the extreme case (their
top-1 logit leads the runner-up by a median 0.02 on photos, so a 0.9998 cosine still flips one image in 30), and
trained networks have such images too. With ``tie_margin`` t (logits; the recipe's ``tie_logit_margin``, default
0.05, i.e. probabilities within about 5 % of each other) the gate's agreement counts a pick as agreeing when eager
FP32 scores it within t of its own pick (top-1), or within t of its own 5th class (top-5). The strict figures are
reported beside them (``top1_agreement``, ``top5_agreement``), with how many images had such a near tie; the
accuracy drop on labelled data is never relaxed.
"""
from __future__ import annotations

import numpy as np

from ..metrics import cosine_rows, topk as _topk
from ..recipes import QuantGate


def accuracy(logits: np.ndarray, labels, k: int = 1) -> float:
    labels = np.asarray(labels)
    return float(np.mean([lab in row for lab, row in zip(labels, _topk(logits, k).tolist())]))


def gate_figures(reference: np.ndarray, output: np.ndarray, labels=None, tie_margin: float = 0.0) -> dict:
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(output, dtype=np.float64).reshape(len(output), -1)
    if ref.shape != out.shape:
        raise ValueError(f"artifact logits {out.shape} differ in shape from eager {ref.shape}")
    finite = bool(np.isfinite(out).all())
    fig: dict = {"images": int(len(ref)), "finite": finite}
    if not finite:
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    cos = cosine_rows(ref, out)
    k_ref, k_out = _topk(ref, 5), _topk(out, 5)
    fig.update(
        top1_agreement=float(np.mean(ref.argmax(1) == out.argmax(1))),
        top5_agreement=float(np.mean([len(set(a) & set(b)) / k_ref.shape[1]
                                      for a, b in zip(k_ref.tolist(), k_out.tolist())])),
        mean_cosine=float(cos.mean()),
        min_cosine=float(cos.min()),
    )
    srt = -np.sort(-ref, axis=1)
    k = k_ref.shape[1]
    rows = np.arange(len(ref))
    # a pick agrees when eager FP32 scores it within tie_margin of its own top-1 (of its own k-th, for top-5)
    fig["tie_margin"] = float(tie_margin)
    fig["near_tie_images"] = int(np.sum(srt[:, 0] - srt[:, min(1, k - 1)] < tie_margin)) if k > 1 else 0
    fig["top1_agreement_within_tie"] = float(np.mean(ref[rows, out.argmax(1)] >= srt[:, 0] - tie_margin))
    fig["top5_agreement_within_tie"] = float(np.mean(
        (np.take_along_axis(ref, k_out, axis=1) >= (srt[:, k - 1] - tie_margin)[:, None]).sum(1) / k))
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
    t1 = fig.get("top1_agreement_within_tie", fig["top1_agreement"])
    t5 = fig.get("top5_agreement_within_tie", fig["top5_agreement"])
    tie = f" (near ties within {fig['tie_margin']:g} agree)" if fig.get("tie_margin") else ""
    if t1 < gate.min_top1_agreement:
        bad.append(f"top-1 agreement {t1:.3f} < {gate.min_top1_agreement}{tie}")
    if t5 < gate.min_top5_agreement:
        bad.append(f"top-5 agreement {t5:.3f} < {gate.min_top5_agreement}{tie}")
    if fig["mean_cosine"] < gate.min_mean_cosine:
        bad.append(f"mean cosine {fig['mean_cosine']:.4f} < {gate.min_mean_cosine}")
    if "accuracy_drop" in fig and fig["accuracy_drop"] > gate.max_accuracy_drop:
        bad.append(f"top-1 accuracy drop {fig['accuracy_drop']:.3f} > {gate.max_accuracy_drop}")
    return bad
