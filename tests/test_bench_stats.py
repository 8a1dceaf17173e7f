"""Statistics behind hvit-bench: summaries, the median's CI, blocks, warm-up settling, run comparison."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hvit_deploy.bench import stats


def test_summarize_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.lognormal(2.0, 0.1, 1001)
    s = stats.summarize(x)
    assert s["median_ms"] == np.median(x)
    assert s["mean_ms"] == pytest.approx(x.mean())
    assert s["std_ms"] == pytest.approx(x.std(ddof=1))
    assert s["min_ms"] == x.min() and s["max_ms"] == x.max()
    assert s["p90_ms"] == pytest.approx(np.percentile(x, 90))
    assert s["p99_ms"] == pytest.approx(np.percentile(x, 99))
    lo, hi = s["median_ci_ms"]
    assert lo < s["median_ms"] < hi
    assert lo in x and hi in x  # order statistics, not interpolated values


def test_median_ci_is_exact_order_statistic_interval():
    # n = 100: the classical 95 % interval is (x_(40), x_(61)) (coverage 0.9648)
    x = np.arange(1, 101, dtype=float)
    assert stats.median_ci(x, 0.95) == (40.0, 61.0)
    # tiny samples: the whole range
    assert stats.median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)


def test_median_ci_coverage_on_independent_draws():
    rng = np.random.default_rng(1)
    true_median = math.exp(1.0)  # lognormal(1, 0.3)
    hits = 0
    trials = 400
    for _ in range(trials):
        lo, hi = stats.median_ci(rng.lognormal(1.0, 0.3, 60), 0.95)
        hits += lo <= true_median <= hi
    assert 0.92 <= hits / trials <= 0.99


def test_blocks_follow_rounds_or_ten_slices():
    x = np.arange(1000, dtype=float)
    assert stats.choose_blocks(1000) == 10
    assert stats.choose_blocks(1000, rounds=12) == 12
    assert stats.choose_blocks(1000, rounds=4) == 10
    assert stats.choose_blocks(20) == 4
    b = stats.block_medians(x, 10)
    assert b.tolist() == [np.median(c) for c in np.array_split(x, 10)]


def test_settled_means_no_longer_improving():
    assert not stats.settled([10.0], 0.03)
    assert stats.settled([10.0, 10.2], 0.03)
    assert stats.settled([10.0, 9.8], 0.03)
    assert not stats.settled([10.0, 9.0], 0.03)  # still getting faster: keep warming up
    assert stats.settled([10.0, 13.0], 0.03)  # slower again: a busy machine, not warm-up


def _series(n=2000, base=10.0, seed=0, ar=0.9, sd=0.03):
    """Autocorrelated latencies like a real run: AR(1) multiplicative noise plus rare stalls."""
    rng = np.random.default_rng(seed)
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = ar * e[i - 1] + rng.normal(0, sd * math.sqrt(1 - ar * ar))
    x = base * np.exp(e) * rng.lognormal(0, 0.01, n)
    x[rng.random(n) < 0.01] *= 3
    return x


def test_compare_detects_ten_percent_both_ways():
    a = _series()
    assert stats.compare_runs(a, a).verdict == "unchanged"
    slow = stats.compare_runs(a, a * 1.10)
    assert slow.verdict == "regression" and slow.ratio == pytest.approx(1.10)
    assert slow.ratio_ci[0] > 1.0 and slow.p_value < 0.01
    fast = stats.compare_runs(a, a * 0.90)
    assert fast.verdict == "improvement" and fast.ratio_ci[1] < 1.0


def test_compare_ignores_small_and_resampled_changes():
    a = _series(seed=2)
    rng = np.random.default_rng(3)
    # a bootstrap resample of the baseline's own samples
    assert stats.compare_runs(a, rng.choice(a, a.size)).verdict == "unchanged"
    # zero-mean uniform noise on every sample
    assert stats.compare_runs(a, a * rng.uniform(0.9, 1.1, a.size)).verdict == "unchanged"
    # a real but sub-threshold shift
    assert stats.compare_runs(a, a * 1.02).verdict == "unchanged"
    # an independent run of the same "machine"
    assert stats.compare_runs(a, _series(seed=4)).verdict == "unchanged"


def test_compare_needs_significance_not_only_size():
    # two runs whose block medians overlap completely: a 10 % median shift from 12 samples is not enough
    a = np.array([10, 14, 9, 13, 10, 15, 9, 14, 10, 13, 9, 14], dtype=float)
    t = stats.compare_runs(a, a[::-1] * 1.1)
    assert t.verdict == "unchanged"
    assert not t.decidable or t.p_value >= 0.01
    assert any("not significant" in n or "too few" in n for n in t.notes)


def test_compare_flags_runs_too_noisy_for_the_threshold():
    rng = np.random.default_rng(5)
    a = np.concatenate([rng.normal(m, 0.1, 100) for m in (10, 12, 9, 13, 10, 12, 9, 13, 10, 12)])
    t = stats.compare_runs(a, a, threshold=0.05)
    assert any("too wide" in n for n in t.notes)


def test_speedup_ratio_and_ci():
    a = _series(base=20.0, seed=6)
    b = _series(base=10.0, seed=7)
    s = stats.speedup(a, b)
    assert s["speedup"] == pytest.approx(np.median(a) / np.median(b))
    assert s["ci"][0] < s["speedup"] < s["ci"][1]
    assert 1.8 < s["speedup"] < 2.2


def test_block_groups_follow_rounds():
    g = stats.block_groups(600, 12, 12, [0] * 4 + [1] * 4 + [2] * 4)
    assert g.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert stats.block_groups(600, 12, 12, [0] * 12) is None  # one process: plain blocks
    # 4 rounds over 2 processes, cut into 10 slices of 60: slices 0-4 start in process 0
    assert stats.block_groups(600, 10, 4, [0, 0, 1, 1]).tolist() == [0] * 5 + [1] * 5


def test_process_offsets_widen_the_interval():
    """Rounds from three worker processes whose medians differ by ±8 %: a shift of 10 % cannot be told from
    that, and the two-stage bootstrap says so where a plain block bootstrap would not."""
    rng = np.random.default_rng(8)
    offsets = [1.0, 1.08, 0.93]
    a = np.concatenate([rng.normal(10 * o, 0.05, 50) for o in offsets for _ in range(4)])
    b = np.concatenate([rng.normal(11 * o, 0.05, 50) for o in (1.08, 0.93, 1.0) for _ in range(4)])
    procs = [0] * 4 + [1] * 4 + [2] * 4
    plain = stats.compare_runs(a, b, baseline_rounds=12, candidate_rounds=12)
    clustered = stats.compare_runs(a, b, baseline_rounds=12, candidate_rounds=12,
                                   baseline_round_process=procs, candidate_round_process=procs)
    assert clustered.ratio_ci[1] - clustered.ratio_ci[0] > 1.2 * (plain.ratio_ci[1] - plain.ratio_ci[0])
    assert clustered.ratio_ci[0] < 1.0 < clustered.ratio_ci[1]
    assert clustered.verdict == "unchanged"


def test_paired_rounds_cancel_the_machines_drift():
    """Side by side in one run, round r of both forms saw the same machine: a 10 % slowdown under a drift of
    ±40 % is found by the paired test, which the unpaired one cannot see through."""
    rng = np.random.default_rng(9)
    drift = rng.uniform(0.7, 1.4, 12)
    base_rounds = 10 * drift * rng.lognormal(0, 0.01, 12)
    slow_rounds = 11 * drift * rng.lognormal(0, 0.01, 12)
    same_rounds = 10 * drift * rng.lognormal(0, 0.01, 12)
    samples = lambda rounds: np.concatenate([rng.normal(m, 0.02 * m, 50) for m in rounds])  # noqa: E731
    a, b, c = samples(base_rounds), samples(slow_rounds), samples(same_rounds)
    t = stats.compare_paired(base_rounds, slow_rounds, baseline_median=np.median(a), candidate_median=np.median(b))
    assert t.verdict == "regression" and t.ratio_ci[0] > 1.0 and t.p_value < 0.01
    assert stats.compare_paired(base_rounds, same_rounds, baseline_median=np.median(a),
                                candidate_median=np.median(c)).verdict == "unchanged"
    assert stats.compare_runs(a, b, baseline_rounds=12, candidate_rounds=12).verdict == "unchanged"
    few = stats.compare_paired(base_rounds[:5], slow_rounds[:5], baseline_median=10, candidate_median=11)
    assert not few.decidable and few.verdict == "unchanged"


def test_trimmed_mean_matches_scipy_and_ignores_nan_padding():
    """The paired comparison's optional centre (``center="trimmed"``): scipy's trim_mean per row, with rows of
    different lengths padded by NaN (the cluster bootstrap's layout); a planted 5 % shift is still flagged."""
    from scipy.stats import trim_mean

    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 23))
    assert np.allclose(stats.trimmed_mean(x), trim_mean(x, 0.2, axis=1))
    padded = x.copy()
    padded[:, 17:] = np.nan
    assert np.allclose(stats.trimmed_mean(padded), [trim_mean(r[:17], 0.2) for r in x])
    a = rng.lognormal(np.log(10), 0.03, 60)
    t = stats.compare_paired(a, a * 1.05 * rng.lognormal(0, 0.01, 60), baseline_median=10, candidate_median=10.5,
                             threshold=0.02, round_process=[i // 20 for i in range(60)], center="trimmed")
    assert t.verdict == "regression" and 1.03 < t.ratio_ci[0] < 1.05 < t.ratio_ci[1] < 1.07
