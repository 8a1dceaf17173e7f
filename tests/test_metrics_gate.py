"""Exact figures of the one metrics module (export validation) and of the INT8 accuracy gate, on hand-made
arrays whose answers are worked out by hand: every boundary (>= vs >, a zero row, a tie, NaN, a shape mismatch)
is pinned so that a changed operator or constant fails here. These are the fast unit tests that
tools/mutation.py runs against hvit_deploy/metrics.py and hvit_deploy/quantize/gate.py."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from hvit_deploy.metrics import Figures, compare, cosine_rows, failures, topk
from hvit_deploy.quantize.gate import accuracy, gate_failures, gate_figures
from hvit_deploy.recipes import QuantGate


@dataclass
class Tol:
    atol: float = 1e-4
    rtol: float = 1e-3
    min_cosine: float = 0.999
    min_top1: float = 1.0
    min_top5: float = 0.8


# --- cosine_rows / topk ---------------------------------------------------------------------------------------

def test_cosine_rows_exact_values_and_zero_rows():
    ref = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    out = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0], [1.0, 0.0], [-3.0, -4.0]])
    np.testing.assert_allclose(cosine_rows(ref, out), [0.0, 1.0, 1.0, 0.0, -1.0], atol=1e-12)
    assert cosine_rows(out[3:4], ref[3:4]).tolist() == [0.0]  # a zero row against a non-zero one, either side
    # rows of any rank are flattened per sample; float32 in, float64 arithmetic
    a = np.arange(1, 9, dtype=np.float32).reshape(2, 2, 2)
    c = cosine_rows(a, a * 2)
    assert c.dtype == np.float64 and np.allclose(c, 1.0, atol=1e-15)
    assert cosine_rows(np.array([[1e-200, 0.0]]), np.array([[1e-200, 0.0]])).tolist() == [1.0]


def test_topk_order_ties_and_k_larger_than_width():
    a = np.array([[0.1, 0.9, 0.5, 0.9, 0.2]])
    assert topk(a, 3).tolist() == [[1, 3, 2]]  # largest first, ties stable by index
    assert topk(a, 1).tolist() == [[1]]
    assert topk(a, 10).tolist() == [[1, 3, 2, 4, 0]]  # k clipped to the width
    assert topk(np.array([[1.0, 2.0]]), 5).shape == (1, 2)


# --- compare / failures ---------------------------------------------------------------------------------------

def test_compare_exact_figures():
    ref = np.array([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]])
    out = ref.copy()
    out[0, 5] = -0.5  # max |diff| 0.5, top-5 and top-1 unchanged
    fig = compare([(ref, out)])
    assert fig.max_abs == 0.5 and fig.max_rel == pytest.approx(0.5 / 4.0)
    assert fig.top1 == 1.0 and fig.top5 == 1.0 and fig.inputs == 1 and fig.finite
    assert fig.min_cosine == pytest.approx(float(cosine_rows(ref, out)[0]))
    # the 5th and 6th swap: one of five top-5 classes differs
    out2 = ref.copy()
    out2[0, 4], out2[0, 5] = -1.0, 0.0
    assert compare([(ref, out2)]).top5 == pytest.approx(0.8)


def test_compare_is_worst_case_over_pairs_and_mean_over_samples():
    ref = np.array([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    flip = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0]])  # sample 0's top-1 flips by a clear margin
    fig = compare([(ref, ref), (ref, flip)])
    assert fig.inputs == 2 and fig.max_abs == 1.0 and fig.top1 == 0.75  # 3 of 4 samples agree
    assert fig.min_cosine == pytest.approx(4.0 / 5.0)
    assert fig.max_rel == pytest.approx(0.5)


def test_compare_top1_tie_tolerance():
    ref = np.array([[1.0, 1.0 - 5e-6, 0.0]])
    swapped = np.array([[1.0 - 5e-6, 1.0, 0.0]])
    assert compare([(ref, swapped)]).top1 == 1.0                 # within the default tie_atol 1e-5
    assert compare([(ref, swapped)], tie_atol=1e-6).top1 == 0.0  # a real flip at a tighter tolerance
    exact = np.array([[1.0, 1.0 - 1e-5, 0.0]])
    assert compare([(exact, exact[:, [1, 0, 2]])], tie_atol=1e-5).top1 == 1.0  # >= at the boundary


def test_compare_nan_is_flagged_and_judged_on_the_finite_part():
    ref = np.array([[1.0, 2.0, 3.0]])
    out = np.array([[1.0, np.nan, np.inf]])
    fig = compare([(ref, out)])
    assert fig.finite is False and fig.max_abs == 3.0  # NaN and Inf taken as 0
    assert fig.as_dict()["finite"] is False
    ref5 = np.array([[5.0, 1.0, 1.0]])
    for bad in (np.nan, np.inf, -np.inf):  # each non-finite value is judged as exactly 0
        assert compare([(ref5, np.array([[bad, 1.0, 1.0]]))]).max_abs == 5.0
        assert compare([(-ref5, np.array([[bad, -1.0, -1.0]]))]).max_abs == 5.0
    assert failures(fig, Tol(atol=10, rtol=0, min_cosine=-1, min_top1=0, min_top5=0)) == ["outputs hold NaN or Inf"]


def test_compare_shape_mismatch_and_empty_and_non_classifier():
    with pytest.raises(ValueError, match=r"output shape \(1, 3\) differs from PyTorch's \(1, 4\)"):
        compare([(np.zeros((1, 4)), np.zeros((1, 3)))])
    empty = compare([])
    assert (empty.max_abs, empty.min_cosine, empty.top1, empty.top5, empty.inputs) == (0.0, 1.0, 1.0, 1.0, 0)
    # features (rank 4) and single-logit outputs have no top-k: both stay 1.0
    feat = np.ones((1, 2, 3, 3))
    fig = compare([(feat, feat * 2), (np.ones((2, 1)), np.ones((2, 1)) * 3)])
    assert fig.top1 == 1.0 and fig.top5 == 1.0 and fig.max_abs == 2.0 and fig.max_rel == pytest.approx(2.0)


def test_figures_as_dict_plain_floats():
    d = Figures(np.float32(0.5), 0.25, np.float64(0.9), 1.0, 1.0, 3).as_dict()
    assert d == {"max_abs": 0.5, "max_rel": 0.25, "min_cosine": pytest.approx(0.9), "top1": 1.0, "top5": 1.0,
                 "inputs": 3, "finite": True}
    assert type(d["max_abs"]) is float and type(d["inputs"]) is int


def test_failures_each_bound_and_its_message():
    fig = Figures(max_abs=0.01, max_rel=0.001, min_cosine=0.99, top1=0.5, top5=0.6, inputs=2)
    bad = failures(fig, Tol())
    # bound = atol + rtol * (max_abs / max_rel) = 1e-4 + 1e-3 * 10
    assert bad == ["cosine 0.990000 < 0.999", "top-1 agreement 50% < 100%", "top-5 overlap 60% < 80%"]
    over = Figures(max_abs=0.02, max_rel=0.002, min_cosine=1.0, top1=1.0, top5=1.0, inputs=1)
    assert failures(over, Tol()) == ["max|diff| 0.02 > 0.0101"]
    # max_ref given: the bound uses it instead of the figures' own scale
    assert failures(over, Tol(), max_ref=100.0) == []
    assert failures(over, Tol(), max_ref=0.0) == ["max|diff| 0.02 > 0.0001"]
    # at the bounds exactly: passes (> and <, not >= and <=)
    edge = Figures(max_abs=0.0101, max_rel=0.00101, min_cosine=0.999, top1=1.0, top5=0.8, inputs=1)
    assert failures(edge, Tol(), max_ref=10.0) == []
    # no relative error recorded (max_rel 0): the bound is atol alone
    assert failures(Figures(0.0005, 0.0, 1.0, 1.0, 1.0, 1), Tol()) == ["max|diff| 0.0005 > 0.0001"]
    # zero error: no division by zero, nothing fails
    assert failures(Figures(0.0, 0.0, 1.0, 1.0, 1.0, 1), Tol()) == []


# --- the INT8 gate ----------------------------------------------------------------------------------------------

def test_accuracy_top1_and_top5():
    logits = np.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    assert accuracy(logits, [5, 0], 1) == 1.0
    assert accuracy(logits, [4, 0], 1) == 0.5
    assert accuracy(logits, [1, 4], 5) == 1.0 and accuracy(logits, [0, 5], 5) == 0.0
    assert accuracy(logits, [0, 5]) == 0.0  # k defaults to 1


def _gate_case():
    ref = np.zeros((4, 10))
    ref[:, :6] = [[3.0, 2.99, 1, 0.5, 0.4, 0.3], [5.0, 3.0, 1, 0.5, 0.4, 0.3],
                  [4.0, 1.0, 0.9, 0.8, 0.7, 0.1], [4.0, 1.0, 0.9, 0.8, 0.7, 0.1]]
    out = ref.copy()
    out[0, :2] = [2.99, 3.0]        # near tie swapped
    out[1, :2] = [3.0, 5.0]         # clear flip
    out[2, 4:6] = [0.1, 0.7]        # 5th/6th swapped by 0.6
    return ref, out


def test_gate_figures_exact():
    ref, out = _gate_case()
    fig = gate_figures(ref, out, labels=[0, 0, 0, 1], tie_margin=0.05)
    assert fig["images"] == 4 and fig["finite"] is True and fig["tie_margin"] == 0.05
    assert fig["top1_agreement"] == 0.5 and fig["top1_agreement_within_tie"] == 0.75
    assert fig["top5_agreement"] == pytest.approx(0.95) and fig["top5_agreement_within_tie"] == pytest.approx(0.95)
    assert fig["near_tie_images"] == 1
    cos = cosine_rows(ref, out)
    assert fig["mean_cosine"] == pytest.approx(cos.mean()) and fig["min_cosine"] == pytest.approx(cos.min())
    assert fig["min_cosine"] < fig["mean_cosine"] < 1.0
    assert fig["eager_top1"] == 0.75 and fig["artifact_top1"] == 0.25 and fig["accuracy_drop"] == 0.5
    assert "eager_top1" not in gate_figures(ref, out)  # no labels, no accuracy figures


def test_gate_near_tie_margin_boundaries():
    ref = np.array([[1.0, 0.95, 0.0, -1.0, -2.0, -3.0]])
    out = np.array([[0.95, 1.0, 0.0, -1.0, -2.0, -3.0]])
    at = gate_figures(ref, out, tie_margin=0.05)
    assert at["near_tie_images"] == 0  # a lead of exactly the margin is not a near tie (<)
    assert at["top1_agreement_within_tie"] == 1.0  # but the pick scores within the margin (>=)
    below = gate_figures(ref, out, tie_margin=0.04)
    assert below["top1_agreement_within_tie"] == 0.0 and below["near_tie_images"] == 0
    above = gate_figures(ref, out, tie_margin=0.06)
    assert above["near_tie_images"] == 1
    # top-5 within the tie: the 6th class picked instead of the 5th, 0.5 below it
    ref5 = np.array([[5.0, 4.0, 3.0, 2.0, 1.0, 0.5]])
    out5 = np.array([[5.0, 4.0, 3.0, 2.0, 0.4, 0.5]])
    assert gate_figures(ref5, out5, tie_margin=0.5)["top5_agreement_within_tie"] == 1.0
    assert gate_figures(ref5, out5, tie_margin=0.4)["top5_agreement_within_tie"] == pytest.approx(0.8)
    assert gate_figures(ref5, out5)["top5_agreement"] == pytest.approx(0.8)


def test_gate_one_class_and_few_classes():
    one = gate_figures(np.array([[1.0], [2.0]]), np.array([[1.0], [2.0]]), tie_margin=1.0)
    assert one["near_tie_images"] == 0 and one["top1_agreement"] == 1.0 and one["top5_agreement"] == 1.0
    two = gate_figures(np.array([[1.0, 0.5]]), np.array([[0.5, 1.0]]), tie_margin=1.0)
    assert two["near_tie_images"] == 1 and two["top5_agreement"] == 1.0 and two["top1_agreement"] == 0.0


def test_gate_figures_non_finite_and_shape():
    ref = np.array([[1.0, 2.0, 3.0]])
    fig = gate_figures(ref, np.array([[np.nan, 2.0, 3.0]]))
    assert fig["finite"] is False and fig["top1_agreement"] == 1.0
    assert "non-finite logits" in gate_failures(fig, QuantGate(min_top1_agreement=0, min_top5_agreement=0,
                                                                min_mean_cosine=-1, max_accuracy_drop=1))
    with pytest.raises(ValueError, match=r"artifact logits \(1, 2\) differ in shape from eager \(1, 3\)"):
        gate_figures(ref, np.zeros((1, 2)))
    # (N, 1, C) logits are flattened per image
    assert gate_figures(ref.reshape(1, 1, 3), ref.reshape(1, 1, 3))["images"] == 1


def test_gate_failures_each_bar_and_message():
    base = {"images": 10, "finite": True, "top1_agreement": 0.5, "top5_agreement": 0.5, "mean_cosine": 0.5,
            "top1_agreement_within_tie": 0.99, "top5_agreement_within_tie": 0.95, "tie_margin": 0.05}
    gate = QuantGate(min_top1_agreement=0.99, min_top5_agreement=0.95, min_mean_cosine=0.5, max_accuracy_drop=0.01,
                     min_images=10)
    assert gate_failures(base, gate) == []  # the within-tie figures are judged; every bar met exactly
    low = dict(base, top1_agreement_within_tie=0.98, top5_agreement_within_tie=0.94, mean_cosine=0.49,
               images=9, accuracy_drop=0.02)
    assert gate_failures(low, gate) == [
        "9 held-out images < 10",
        "top-1 agreement 0.980 < 0.99 (near ties within 0.05 agree)",
        "top-5 agreement 0.940 < 0.95 (near ties within 0.05 agree)",
        "mean cosine 0.4900 < 0.5",
        "top-1 accuracy drop 0.020 > 0.01",
    ]
    assert gate_failures(dict(base, accuracy_drop=0.01), gate) == []
    # without the within-tie figures (old results) the strict ones are judged, and no tie note is added
    strict = {"images": 10, "finite": True, "top1_agreement": 0.98, "top5_agreement": 0.99, "mean_cosine": 1.0}
    assert gate_failures(strict, gate) == ["top-1 agreement 0.980 < 0.99"]
    assert gate_failures(dict(strict, tie_margin=0.0), gate) == ["top-1 agreement 0.980 < 0.99"]
    assert gate_failures({**strict, "finite": False, "top1_agreement": 1.0}, gate) == ["non-finite logits"]
    assert gate_failures({k: v for k, v in strict.items() if k != "finite"} | {"top1_agreement": 1.0},
                         gate) == ["non-finite logits"]


# --- pinned by the mutants that survived the first mutmut run (docs/testing.md) --------------------------------

def test_cosine_rows_float64_small_and_huge_rows():
    big = np.full((1, 2), 1e30, dtype=np.float32)  # float32 products would overflow to inf
    np.testing.assert_allclose(cosine_rows(big, big), [1.0], rtol=1e-12)
    np.testing.assert_allclose(cosine_rows(big, -big), [-1.0], rtol=1e-12)
    # norms below 1 (denominator 0.125): still a real cosine, not a clamp
    assert cosine_rows(np.array([[0.5, 0.0]]), np.array([[0.25, 0.0]])).tolist() == [1.0]
    assert cosine_rows(np.array([[0.5, 0.0]]), np.array([[0.0, 0.25]])).tolist() == [0.0]


def test_topk_last_axis_of_a_3d_array_and_stable_ties():
    a = np.array([[[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]]])  # (1, 2, 3): the last axis has 3 entries
    assert topk(a, 5).tolist() == [[[1, 2, 0], [0, 2, 1]]]
    assert topk(a, 2).tolist() == [[[1, 2], [0, 2]]]
    ties = np.zeros((1, 100))
    ties[0, [70, 30]] = 1.0
    assert topk(ties, 5).tolist() == [[30, 70, 0, 1, 2]]  # ties keep index order


def test_compare_scales_below_one_and_two_classes_and_per_row_best():
    ref, out = np.array([[0.5, 0.1]]), np.array([[0.25, 0.1]])
    fig = compare([(ref, out)])
    assert fig.max_abs == 0.25 and fig.max_rel == pytest.approx(0.5)  # relative to max|ref| 0.5, not 1
    assert compare([(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))]).top1 == 0.0  # two classes still judged
    rows = np.array([[2.0, 1.0, 0.0], [10.0, 0.0, 0.0]])  # each row against its own best
    assert compare([(rows, rows)]).top1 == 1.0


def test_gate_non_finite_values_count_as_zero_and_default_margin_is_strict():
    ref = np.array([[1.0, 0.0, 0.0]])
    for bad in (np.nan, np.inf, -np.inf):
        fig = gate_figures(ref, np.array([[bad, 1.0, 0.0]]))
        assert fig["finite"] is False and fig["mean_cosine"] == 0.0 and fig["min_cosine"] == 0.0
        assert fig["top1_agreement"] == 0.0
    near = gate_figures(np.array([[1.0, 0.99]]), np.array([[0.99, 1.0]]))  # tie_margin defaults to 0: strict
    assert near["tie_margin"] == 0.0 and near["top1_agreement_within_tie"] == 0.0 and near["near_tie_images"] == 0


def test_gate_near_tie_is_strictly_below_the_margin_with_two_or_three_classes():
    assert gate_figures(np.array([[1.0, 0.5, 0.0]]), np.array([[1.0, 0.5, 0.0]]), tie_margin=0.5)["near_tie_images"] == 0
    assert gate_figures(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), tie_margin=0.5)["near_tie_images"] == 0
    assert gate_figures(np.array([[1.0, 0.75]]), np.array([[1.0, 0.75]]), tie_margin=0.5)["near_tie_images"] == 1


def test_gate_non_finite_values_off_the_top_count_as_zero_too():
    """A NaN/inf in a class that is not the top one is read as 0, not as numpy's default +-1.8e308 (which
    would overflow the norm and turn the cosine to 0): the cosine of [1, 0, 0.5] with [1, 0, 0]."""
    for bad in (np.nan, np.inf, -np.inf):
        fig = gate_figures(np.array([[1.0, 0.0, 0.0]]), np.array([[1.0, bad, 0.5]]))
        assert fig["finite"] is False and fig["top1_agreement"] == 1.0
        assert fig["mean_cosine"] == pytest.approx(1 / np.sqrt(1.25), rel=1e-12)


def test_gate_tie_arithmetic_is_float64_for_float32_logits():
    """Runtimes hand back float32 logits; the margin arithmetic is float64, so a pick exactly tie_margin below
    top-1 agrees (inclusive) and that gap is not a near tie (strictly below). In float32, 10.3 - (-0.2) rounds to
    10.5 and both answers flip."""
    ref = np.array([[10.3, -0.2]], dtype=np.float32)
    margin = float(np.float64(ref[0, 0]) - np.float64(ref[0, 1]))
    assert margin != float(ref[0, 0] - ref[0, 1])
    fig = gate_figures(ref, ref[:, ::-1].copy(), tie_margin=margin)
    assert fig["top1_agreement"] == 0.0 and fig["top1_agreement_within_tie"] == 1.0
    assert fig["near_tie_images"] == 0
