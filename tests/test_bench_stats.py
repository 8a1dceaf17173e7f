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


# ------------------------------------------------------------------------------------ exact figures and edges
# (each pins a figure or a boundary that a wrong constant, comparison or default in bench/stats.py would move)


def test_as_array_and_summarize_edges():
    a = stats.as_array([1, 2, 3])
    assert a.dtype == np.float64 and a.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="^samples must be a flat list of numbers$"):
        stats.as_array([[1.0, 2.0]])
    with pytest.raises(ValueError, match="^no samples$"):
        stats.summarize([])
    one = stats.summarize([4.0])
    assert one["std_ms"] == 0.0 and one["median_ci_ms"] == [4.0, 4.0] and one["ci_level"] == 0.95
    s = stats.summarize([1.0, 2.0, 3.0, 4.0, 5.0, 100.0], level=0.9)
    assert s["ci_level"] == 0.9 and s["median_ms"] == 3.5 and s["mean_ms"] == pytest.approx(115 / 6)
    assert s["p90_ms"] == pytest.approx(52.5) and s["p99_ms"] == pytest.approx(95.25)   # linear interpolation
    assert s["iqr_rel"] == pytest.approx((4.75 - 2.25) / 3.5)
    assert math.isnan(stats.summarize([0.0, 0.0, 0.0])["iqr_rel"])   # a zero median has no relative spread
    assert stats.percentile(np.array([0.0, 10.0]), 25) == 2.5


def _median_ci_brute_force(n: int, level: float) -> tuple[int, int]:
    """1-based ranks (l, n+1-l) of the narrowest symmetric order-statistic pair covering the median with
    probability >= level; the whole range when no pair does."""
    from scipy.stats import binom

    for lo in range(n // 2, 0, -1):
        if binom.cdf(n - lo, n, 0.5) - binom.cdf(lo - 1, n, 0.5) >= level:
            return lo, n + 1 - lo
    return 1, n


@pytest.mark.parametrize("level", [0.5, 0.75, 50 / 64, 0.9, 0.95, 0.99])  # 50/64: alpha/2 is exactly P(K <= 1), n=6
def test_median_ci_is_the_narrowest_pair_reaching_the_level(level):
    for n in range(6, 121):
        x = np.arange(1, n + 1, dtype=float)[::-1]  # given in reverse: the interval sorts first
        assert stats.median_ci(x, level) == tuple(float(r) for r in _median_ci_brute_force(n, level)), n
    assert all(math.isnan(v) for v in stats.median_ci([]))
    assert stats.median_ci([5.0, 1.0, 4.0, 2.0, 3.0]) == (1.0, 5.0)   # n < 6: the whole range


def test_round_sizes_blocks_and_groups_edges():
    assert stats.round_sizes(10, 3) == [4, 3, 3] and stats.round_sizes(2, 4) == [1, 1, 0, 0]
    assert stats.round_sizes(12, 4) == [3, 3, 3, 3]
    x = np.arange(7, dtype=float)
    assert stats.block_medians(x, 20).tolist() == x.tolist()        # never more blocks than samples
    assert stats.block_medians(x, 0).tolist() == [3.0]              # at least one block
    assert stats.block_medians(x, 2).tolist() == [1.5, 5.0]         # 4 + 3, time order kept
    assert stats.choose_blocks(1000, rounds=6) == 6                 # 6 rounds are enough to be the blocks
    assert stats.choose_blocks(1000, rounds=5) == 10
    assert stats.choose_blocks(5, rounds=6) == 1                    # fewer samples than rounds: slices
    assert stats.choose_blocks(6, rounds=6) == 6
    assert stats.choose_blocks(4) == 1 and stats.choose_blocks(55) == 10 and stats.choose_blocks(49) == 9
    y = np.arange(60, dtype=float)
    assert stats.run_blocks(y).tolist() == stats.block_medians(y, 10).tolist()
    assert stats.run_blocks(y, rounds=6).tolist() == [4.5, 14.5, 24.5, 34.5, 44.5, 54.5]
    assert stats.block_groups(60, 6, None, [0, 1] * 3) is None
    assert stats.block_groups(60, 6, 6, None) is None
    assert stats.block_groups(60, 6, 6, [0, 1] * 2) is None          # not one process per round
    assert stats.block_groups(60, 6, 6, [0, 0, 0, 1, 1, 1]).tolist() == [0, 0, 0, 1, 1, 1]
    # 7 samples in 3 rounds (3, 2, 2) on processes 0, 1, 1, cut in 2 blocks (4 + 3): blocks start at 0 and 4
    assert stats.block_groups(7, 2, 3, [0, 1, 1]).tolist() == [0, 1]


def test_settled_boundary_and_zero():
    assert stats.settled([8.0, 6.0], 0.25)               # exactly 1 - tolerance: settled
    assert not stats.settled([8.0, 5.999], 0.25)
    assert not stats.settled([0.0, 0.0], 0.25)           # a zero window says nothing
    assert stats.settled([9.0, 9.0, 8.0, 6.0], 0.25)     # only the last two windows count
    assert not stats.settled([], 0.25)


def test_min_attainable_p_spread_and_detectable():
    assert stats.min_attainable_p(6, 6) == 2.0 / 924 and stats.min_attainable_p(10, 10) == 2.0 / 184756
    assert stats.min_attainable_p(0, 5) == 1.0 == stats.min_attainable_p(5, 0)
    assert stats.relative_spread(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(1 / 3)
    assert stats.relative_spread(np.array([3.0])) == 0.0
    assert stats.relative_spread(np.array([-1.0, 0.0, 0.0, 1.0])) == 0.0
    # CI half-width in log space above log(1 + threshold): the width decides; below: the threshold does
    assert stats.detectable_slowdown((0.9, 1.1), threshold=0.05, alpha=0.01) == pytest.approx(0.14238560905360448)
    assert stats.detectable_slowdown((0.99, 1.01), threshold=0.05, alpha=0.01) == pytest.approx(0.053436474296139264)
    assert stats.detectable_slowdown((0.98, 1.02), threshold=0.02, alpha=0.05, power=0.9) == pytest.approx(
        0.033634992508977134)
    assert stats.detectable_slowdown((0.0, 1.1), threshold=0.05, alpha=0.01) == math.inf
    assert stats.detectable_slowdown((0.9, math.inf), threshold=0.05, alpha=0.01) == math.inf


def test_verdict_rule_boundaries_and_notes():
    v = stats._verdict
    kw = dict(decidable=True, threshold=0.05, alpha=0.01)
    assert v(1.06, 0.001, (1.01, 1.1), notes=[], **kw) == "regression"
    assert v(1.05, 0.001, (1.01, 1.1), notes=[], **kw) == "unchanged"          # exactly the threshold: no
    assert v(1.06, 0.01, (1.01, 1.1), notes=[], **kw) == "unchanged"           # p == alpha: not significant
    assert v(1.06, 0.001, (1.0, 1.1), notes=[], **kw) == "unchanged"           # CI touching 1
    assert v(1.06, 0.001, (1.01, 1.1), notes=[], decidable=False, threshold=0.05, alpha=0.01) == "unchanged"
    assert v(0.9, 0.001, (0.85, 0.99), notes=[], **kw) == "improvement"
    assert v(1 / 1.05, 0.001, (0.85, 0.99), notes=[], **kw) == "unchanged"
    assert v(0.9, 0.001, (0.85, 1.0), notes=[], **kw) == "unchanged"
    notes = []
    assert v(1.2, 0.03, (0.95, 1.4), notes=notes, **kw) == "unchanged"
    assert notes == ["ratio 1.200 is beyond the ±5% threshold but not significant (p=0.03, CI 0.950–1.400)"]
    notes = []
    v(0.5, 0.5, (0.3, 1.2), notes=notes, **kw)
    assert notes and notes[0].startswith("ratio 0.500 is beyond")
    notes = []
    v(1.04, 0.5, (0.9, 1.2), notes=notes, **kw)
    assert notes == []                                                          # within the threshold: no note


def _plain_bootstrap_ratio(a, b, level, n_boot, seed):
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    ma = np.median(a[rng.integers(0, a.size, size=(n_boot, a.size))], axis=1)
    lo, hi = np.quantile(mb / ma, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def test_compare_runs_figures_are_its_parts():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(11)
    a = rng.lognormal(np.log(10), 0.05, 120)
    b = rng.lognormal(np.log(11), 0.05, 120)
    t = stats.compare_runs(a, b, baseline_rounds=12, candidate_rounds=12, n_boot=500, seed=3)
    ab, bb = stats.block_medians(a, 12), stats.block_medians(b, 12)
    assert t.baseline_median_ms == np.median(a) and t.candidate_median_ms == np.median(b)
    assert t.ratio == np.median(b) / np.median(a) and t.baseline_blocks == t.candidate_blocks == 12
    assert t.p_value == mannwhitneyu(bb, ab, alternative="two-sided").pvalue
    assert t.ratio_ci == _plain_bootstrap_ratio(ab, bb, 0.99, 500, 3)
    assert t.baseline_spread == stats.relative_spread(ab) and t.candidate_spread == stats.relative_spread(bb)
    assert t.verdict == "regression" and t.decidable and not t.too_noisy and t.notes == []
    assert t.detectable == stats.detectable_slowdown(t.ratio_ci, threshold=0.05, alpha=0.01)
    d = t.to_dict()
    assert d["ratio_ci"] == list(t.ratio_ci) and d["verdict"] == "regression" and d["p_value"] == t.p_value
    with pytest.raises(ValueError, match="^both runs need samples$"):
        stats.compare_runs([], b)
    with np.errstate(divide="ignore", invalid="ignore"):   # ratios over a zero baseline
        zero = stats.compare_runs(np.zeros(20), np.ones(20), n_boot=50)
    assert zero.ratio == math.inf
    few = stats.compare_runs(a[:12], b[:12], n_boot=50)   # 2 blocks each: p can never get below 0.01
    assert not few.decidable and few.p_value == 1.0 and few.detectable == math.inf
    assert few.notes[0] == "too few samples to test (2 and 2 blocks); need more iterations"
    noisy = stats.compare_runs(a, a * np.repeat([1.0, 1.2], 60), baseline_rounds=12, candidate_rounds=12, n_boot=50)
    assert noisy.too_noisy and noisy.candidate_spread > 0.025 >= noisy.baseline_spread
    assert any(n.startswith("candidate spread ±") and n.endswith("is too wide to resolve ±5%") for n in noisy.notes)
    assert not any(n.startswith("baseline spread") for n in noisy.notes)


def test_bootstrap_and_speedup_are_the_plain_block_bootstrap():
    rng = np.random.default_rng(12)
    a, b = rng.lognormal(2.0, 0.1, 10), rng.lognormal(2.3, 0.1, 10)
    assert stats.bootstrap_ratio_ci(a, b, 0.9, n_boot=300, seed=4) == _plain_bootstrap_ratio(a, b, 0.9, 300, 4)
    assert stats.bootstrap_ratio_ci(a, b, 0.95) == _plain_bootstrap_ratio(a, b, 0.95, 4000, 0)   # the defaults
    ref, other = rng.lognormal(2.0, 0.1, 100), rng.lognormal(1.0, 0.1, 100)
    s = stats.speedup(ref, other, level=0.9)
    assert s["speedup"] == np.median(ref) / np.median(other)
    rb, ob = stats.block_medians(ref, 10), stats.block_medians(other, 10)
    assert s["ci"] == list(_plain_bootstrap_ratio(ob, rb, 0.9, 2000, 0))
    assert stats.speedup(ref, other, reference_rounds=10, other_rounds=10)["ci"] == list(
        _plain_bootstrap_ratio(ob, rb, 0.95, 2000, 0))


def test_cluster_bootstrap_draws_processes_then_their_own_blocks():
    """With one distinct value per process, every bootstrap median is a median of process values drawn with
    replacement, each process contributing its own number of blocks."""
    blocks = np.array([1.0, 1.0, 1.0, 5.0, 9.0, 9.0])
    groups = np.array([0, 0, 0, 1, 2, 2])
    rng = np.random.default_rng(0)
    meds = stats._boot_medians(blocks, groups, 2000, rng)
    assert set(np.unique(meds)) <= {1.0, 3.0, 5.0, 7.0, 9.0}
    assert {1.0, 5.0, 9.0} <= set(np.unique(meds))   # all three processes are drawn
    trimmed = stats._boot_medians(blocks, groups, 200, np.random.default_rng(0), center="trimmed")
    assert trimmed.shape == (200,) and trimmed.min() >= 1.0 and trimmed.max() <= 9.0
    plain = stats._boot_medians(blocks, None, 200, np.random.default_rng(0))
    expect = np.median(blocks[np.random.default_rng(0).integers(0, 6, size=(200, 6))], axis=1)
    assert plain.tolist() == expect.tolist()


def test_compare_paired_edges_and_notes():
    base = np.array([10.0, 11.0, 9.0, 10.5, 10.0, 9.5, 10.2, 9.8])
    slow = base * 1.2
    t = stats.compare_paired(base, slow, baseline_median=10.0, candidate_median=12.0, n_boot=200, unit="block")
    assert t.ratio == 1.2 and t.baseline_blocks == t.candidate_blocks == 8 and t.decidable   # 2/2**8 < 0.01
    assert t.notes[0] == "paired by block: 8 blocks timed side by side in one run"
    assert t.ratio_ci == pytest.approx((1.2, 1.2)) and t.verdict == "regression"
    assert t.baseline_spread == t.candidate_spread == pytest.approx(0.0) and not t.too_noisy
    seven = stats.compare_paired(base[:7], slow[:7], baseline_median=10.0, candidate_median=12.0, n_boot=50)
    assert not seven.decidable and seven.p_value == 1.0 and seven.detectable == math.inf   # 2/2**7 > 0.01
    assert seven.notes[1] == "too few rounds to test (7); use --rounds 8 or more"
    same = stats.compare_paired(base, base, baseline_median=10.0, candidate_median=10.0, n_boot=50)
    assert same.p_value == 1.0 and same.verdict == "unchanged" and same.ratio_ci == (1.0, 1.0)
    assert stats.compare_paired(base, slow, baseline_median=0.0, candidate_median=1.0, n_boot=50).ratio == math.inf
    with pytest.raises(ValueError, match="^paired comparison needs the same number of rounds on both sides$"):
        stats.compare_paired(base, slow[:7], baseline_median=10.0, candidate_median=12.0)
    with pytest.raises(ValueError, match="same number of rounds"):
        stats.compare_paired([], [], baseline_median=10.0, candidate_median=12.0)
    wobbly = base * np.array([1.0, 1.3] * 4)
    w = stats.compare_paired(base, wobbly, baseline_median=10.0, candidate_median=11.5, n_boot=200, alpha=0.05)
    assert w.too_noisy and w.notes[-1].startswith("round-to-round spread of the paired ratio ±")
    assert w.baseline_spread == stats.relative_spread(np.exp(np.log(wobbly / base)))
    from scipy.stats import wilcoxon

    assert w.p_value == wilcoxon(np.log(wobbly / base), alternative="two-sided").pvalue


def test_comparisons_default_to_4000_draws_seed_0_threshold_5_alpha_1_percent():
    """The defaults the CLI relies on, pinned by recomputing each figure from its parts."""
    from scipy.stats import mannwhitneyu, wilcoxon

    rng = np.random.default_rng(13)
    base = rng.lognormal(np.log(10), 0.02, 10)
    cand = base * rng.lognormal(np.log(1.03), 0.01, 10)
    t = stats.compare_paired(base, cand, baseline_median=10.0, candidate_median=10.3)
    d = np.log(cand / base)
    boot = np.median(d[np.random.default_rng(0).integers(0, 10, size=(4000, 10))], axis=1)
    assert t.ratio_ci == tuple(float(v) for v in np.exp(np.quantile(boot, [0.005, 0.995])))
    assert t.p_value == wilcoxon(d, alternative="two-sided").pvalue
    assert t.detectable == stats.detectable_slowdown(t.ratio_ci, threshold=0.05, alpha=0.01)
    assert t.notes[0] == "paired by round: 10 rounds timed side by side in one run"
    # a 3 % change is inside the default 5 % threshold: unchanged, whatever the test says
    assert t.verdict == "unchanged" and stats.compare_paired(base, cand, baseline_median=10.0, candidate_median=10.3,
                                                             threshold=0.02).verdict == "regression"
    trimmed = stats.compare_paired(base, cand, baseline_median=10.0, candidate_median=10.3, center="trimmed")
    tboot = stats.trimmed_mean(d[np.random.default_rng(0).integers(0, 10, size=(4000, 10))], axis=1)
    assert trimmed.ratio_ci == tuple(float(v) for v in np.exp(np.quantile(tboot, [0.005, 0.995])))
    # several worker processes: the cluster bootstrap, the same draws as _boot_medians with the groups
    procs = [0] * 5 + [1] * 5
    g = stats.compare_paired(base, cand, baseline_median=10.0, candidate_median=10.3, round_process=procs)
    gboot = stats._boot_medians(d, np.asarray(procs), 4000, np.random.default_rng(0))
    assert g.ratio_ci == tuple(float(v) for v in np.exp(np.quantile(gboot, [0.005, 0.995])))
    one = stats.compare_paired(base, cand, baseline_median=10.0, candidate_median=10.3, round_process=[0] * 10)
    assert one.ratio_ci == t.ratio_ci          # one process: plain bootstrap

    a = rng.lognormal(np.log(10), 0.03, 100)
    b = rng.lognormal(np.log(10.4), 0.03, 100)
    r = stats.compare_runs(a, b)
    ab, bb = stats.block_medians(a, 10), stats.block_medians(b, 10)
    assert r.ratio_ci == _plain_bootstrap_ratio(ab, bb, 0.99, 4000, 0)
    assert r.p_value == mannwhitneyu(bb, ab, alternative="two-sided").pvalue
    assert r.verdict == "unchanged" and stats.compare_runs(a, b, threshold=0.02).verdict == "regression"
    procs12 = [0] * 6 + [1] * 6
    a12, b12 = rng.lognormal(np.log(10), 0.03, 120), rng.lognormal(np.log(10), 0.03, 120)
    rc = stats.compare_runs(a12, b12, baseline_rounds=12, candidate_rounds=12, baseline_round_process=procs12,
                            candidate_round_process=procs12)
    ag = stats.block_groups(120, 12, 12, procs12)
    assert rc.ratio_ci == stats.bootstrap_ratio_ci(stats.block_medians(a12, 12), stats.block_medians(b12, 12), 0.99,
                                                   a_groups=ag, b_groups=ag)
    assert rc.ratio_ci != stats.bootstrap_ratio_ci(stats.block_medians(a12, 12), stats.block_medians(b12, 12), 0.99)
    s = stats.speedup(a12, b12, reference_rounds=12, other_rounds=12, reference_round_process=procs12,
                      other_round_process=procs12)
    lo, hi = stats.bootstrap_ratio_ci(stats.block_medians(b12, 12), stats.block_medians(a12, 12), 0.95, n_boot=2000,
                                      a_groups=ag, b_groups=ag)
    assert s["ci"] == [lo, hi]


def _two_stage(blocks, groups, n_boot, rng):
    """The cluster bootstrap written out with loops: per draw, processes with replacement, then each drawn
    process's own number of blocks, with replacement, from its own blocks (the draws in _boot_medians' order)."""
    members = [blocks[groups == g] for g in np.unique(groups)]
    p, width = len(members), max(m.size for m in members)
    picks = rng.integers(0, p, size=(n_boot, p))
    u = rng.random((n_boot, p, width))
    out = []
    for i in range(n_boot):
        vals = []
        for j in range(p):
            m = members[picks[i, j]]
            vals += [m[min(int(u[i, j, s] * m.size), m.size - 1)] for s in range(m.size)]
        out.append(np.median(vals))
    return np.array(out)


def test_cluster_bootstrap_matches_the_written_out_two_stages():
    blocks = np.array([1.0, 2.0, 5.0, 6.0, 7.0, 9.0, 10.0, 11.0, 12.0])
    groups = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    got = stats._boot_medians(blocks, groups, 60, np.random.default_rng(5))
    assert got.tolist() == _two_stage(blocks, groups, 60, np.random.default_rng(5)).tolist()
    a, b = blocks, blocks * 1.1
    rng = np.random.default_rng(7)
    r = _two_stage(b, groups, 80, rng) / _two_stage(a, groups, 80, rng)
    lo, hi = np.quantile(r, [0.05, 0.95])
    assert stats.bootstrap_ratio_ci(a, b, 0.9, n_boot=80, seed=7, a_groups=groups, b_groups=groups) == (lo, hi)
    rng = np.random.default_rng(7)   # groups on one side only: that side is drawn in two stages, the other plainly
    r = _two_stage(b, groups, 80, rng) / np.median(a[rng.integers(0, 9, size=(80, 9))], axis=1)
    lo, hi = np.quantile(r, [0.05, 0.95])
    assert stats.bootstrap_ratio_ci(a, b, 0.9, n_boot=80, seed=7, b_groups=groups) == (lo, hi)
    rng = np.random.default_rng(7)
    r = np.median(b[rng.integers(0, 9, size=(80, 9))], axis=1) / _two_stage(a, groups, 80, rng)
    lo, hi = np.quantile(r, [0.05, 0.95])
    assert stats.bootstrap_ratio_ci(a, b, 0.9, n_boot=80, seed=7, a_groups=groups) == (lo, hi)


def test_trimmed_mean_on_another_axis_and_single_values():
    from scipy.stats import trim_mean

    x = np.random.default_rng(4).normal(size=(2, 23, 3))
    assert np.allclose(stats.trimmed_mean(x, axis=1), trim_mean(x, 0.2, axis=1))
    assert stats.trimmed_mean(np.array([[5.0, np.nan, np.nan]])).tolist() == [5.0]   # one value: itself
    assert stats.trimmed_mean(np.array([[1.0, 2.0, 3.0, 4.0, 100.0]]), trim=0.2).tolist() == [3.0]


def test_more_boundaries_of_the_summaries_and_blocks():
    x = np.arange(1, 101, dtype=float)
    assert stats.summarize(x, level=0.9)["median_ci_ms"] == list(stats.median_ci(x, 0.9)) != list(stats.median_ci(x))
    assert stats.summarize([1.0, 3.0])["std_ms"] == pytest.approx(math.sqrt(2))
    assert math.isnan(stats.summarize([-1.0, 0.0, 0.0, 5.0])["iqr_rel"])        # median 0, IQR > 0: no ratio
    assert stats.summarize([0.5, 0.5, 0.5])["iqr_rel"] == 0.0                   # a median below 1 is fine
    assert stats.block_groups(6, 6, 6, [0, 1, 0, 1, 0, 1]).tolist() == [0, 1, 0, 1, 0, 1]   # one-sample blocks
    assert not stats.settled([9.0, 9.0, 8.0, 5.9], 0.25)                        # the last window, not the second
    assert stats.settled([0.5, 0.5], 0.25)                                      # windows under 1 ms count
    assert stats.relative_spread(np.array([1.0, 3.0])) == 0.25                  # two blocks have a spread
    assert stats.relative_spread(np.array([0.25, 0.5, 0.75])) == 0.25           # a median under 1 too


def test_compare_runs_boundaries():
    rng = np.random.default_rng(21)
    a = rng.lognormal(np.log(10), 0.02, 60)
    one = stats.compare_runs(a, [12.0], n_boot=20)                              # one candidate sample is a run
    assert one.candidate_blocks == 1 and one.ratio == 12.0 / np.median(a)
    half = stats.compare_runs(a * 0.05, a * 0.06, n_boot=20)                    # medians under 1 ms
    assert half.ratio == pytest.approx(1.2)
    six = stats.compare_runs(a, a * 1.2, baseline_rounds=6, candidate_rounds=6, alpha=2.0 / 924, n_boot=20)
    assert not six.decidable and six.p_value == 1.0                             # p can reach alpha, not go below
    assert stats.compare_runs(a, a * 1.2, baseline_rounds=6, candidate_rounds=6, alpha=2.0 / 923,
                              n_boot=20).decidable
    noisy_base = stats.compare_runs(a * np.repeat([1.0, 1.3], 30), a, baseline_rounds=6, candidate_rounds=6,
                                    n_boot=20)
    assert noisy_base.too_noisy and any(n.startswith("baseline spread ±") for n in noisy_base.notes)
    # spread exactly half the threshold: not too noisy (the rule is "wider than")
    b = a * np.repeat([1.0, 1.02, 1.04, 1.0, 1.02, 1.04], 10)
    s = stats.relative_spread(stats.block_medians(b, 6))
    edge = stats.compare_runs(a, b, baseline_rounds=6, candidate_rounds=6, threshold=2 * s, n_boot=20)
    assert edge.candidate_spread == s and not edge.too_noisy
    assert not any("too wide" in n for n in edge.notes)


def test_verdict_threshold_edges_give_no_note():
    kw = dict(decidable=True, threshold=0.05, alpha=0.01)
    up, down = 1.0 + 0.05, 1.0 / (1.0 + 0.05)
    for ratio in (up, down):
        notes = []
        assert stats._verdict(ratio, 0.5, (0.9, 1.2), notes=notes, **kw) == "unchanged" and notes == []
    assert stats._verdict(0.9, 0.01, (0.85, 0.99), notes=[], **kw) == "unchanged"   # p == alpha


def test_compare_paired_spread_rule_and_medians():
    base = np.array([10.0, 11.0, 9.0, 10.5, 10.0, 9.5, 10.2, 9.8])
    cand = base * np.array([1.0, 1.02, 1.04, 1.0, 1.02, 1.04, 1.0, 1.02])
    s = stats.relative_spread(cand / base)
    assert s > 0

    def run(threshold):
        return stats.compare_paired(base, cand, baseline_median=10.0, candidate_median=10.2, threshold=threshold,
                                    n_boot=20)

    t = run(2 * s)                                   # exactly half the threshold: not too noisy
    assert t.baseline_spread == pytest.approx(s) and not t.too_noisy and not any("too wide" in n for n in t.notes)
    assert run(s / 0.6).too_noisy and "too wide" in run(s / 0.6).notes[-1]   # spread 0.6 x threshold: too wide
    assert not run(s / 0.4).too_noisy                # spread 0.4 x threshold: resolvable
    assert t.baseline_median_ms == 10.0 and t.candidate_median_ms == 10.2
    assert stats.compare_paired(base, cand, baseline_median=0.5, candidate_median=0.6, n_boot=20).ratio == \
        pytest.approx(1.2)
    eight = stats.compare_paired(base, cand, baseline_median=10.0, candidate_median=10.2, alpha=2.0 / 2 ** 8,
                                 n_boot=20)
    assert not eight.decidable                       # the smallest attainable p equals alpha: cannot go below
