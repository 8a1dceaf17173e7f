"""Latency statistics: summaries of one run and the comparison of two.

Everything here is plain numpy/scipy on lists of per-run latencies in milliseconds, so it can be tested without
running a model.

Two facts shape the comparison functions:

* Consecutive latencies are autocorrelated (frequency scaling, a neighbour's burst, cache state). A test on
  4000 raw samples treats them as 4000 independent draws and calls a 0.5 % shift "significant". We therefore
  test on *block medians*: the run is cut into contiguous blocks (its interleaved rounds when it has enough of
  them), each block gives one median, and the blocks are the unit of the test and of the bootstrap.
* Two runs differ by more than their own spread (the machine's state between runs). Only a ratio beyond a
  practical threshold *and* a significant block test *and* a ratio interval that excludes 1 count as a change.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

DEFAULT_CI_LEVEL = 0.95
MIN_BLOCKS = 10        # contiguous slices when a run has few rounds
MIN_ROUND_BLOCKS = 6   # rounds used as blocks from here on (6 vs 6 can reach p = 0.002)


def as_array(samples: Sequence[float]) -> np.ndarray:
    a = np.asarray(samples, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError("samples must be a flat list of numbers")
    return a


def median_ci(samples: Sequence[float], level: float = DEFAULT_CI_LEVEL) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    With n independent draws, the number of samples below the true median is Binomial(n, 1/2); the interval
    [x_(l), x_(u)] (1-based order statistics) covers the median with probability
    P(l <= K < u) = F(u-1) - F(l-1), K ~ Bin(n, 1/2). We take the narrowest symmetric pair reaching ``level``.
    Autocorrelated samples make this interval too narrow; it describes the spread of this run, not of the machine.
    """
    from scipy.stats import binom

    x = np.sort(as_array(samples))
    n = x.size
    if n == 0:
        return (math.nan, math.nan)
    if n < 6:  # no pair of order statistics reaches 95 %; the whole range is the honest answer
        return (float(x[0]), float(x[-1]))
    alpha = 1.0 - level
    # l = largest rank with P(K <= l-1) <= alpha/2; u = n + 1 - l by symmetry
    lo_rank = int(binom.ppf(alpha / 2, n, 0.5))  # P(K <= lo_rank) >= alpha/2
    if binom.cdf(lo_rank, n, 0.5) > alpha / 2:
        lo_rank -= 1
    lo_rank = max(lo_rank + 1, 1)  # 1-based rank of the lower bound
    hi_rank = n + 1 - lo_rank
    return (float(x[lo_rank - 1]), float(x[hi_rank - 1]))


def percentile(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q, method="linear"))


def summarize(samples_ms: Sequence[float], level: float = DEFAULT_CI_LEVEL) -> dict:
    """mean, median, std, min, max, p90, p99 and the median's CI of one list of latencies (ms)."""
    x = as_array(samples_ms)
    if x.size == 0:
        raise ValueError("no samples")
    lo, hi = median_ci(x, level)
    med = float(np.median(x))
    return {
        "mean_ms": float(x.mean()),
        "median_ms": med,
        "std_ms": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min_ms": float(x.min()),
        "max_ms": float(x.max()),
        "p90_ms": percentile(x, 90),
        "p99_ms": percentile(x, 99),
        "median_ci_ms": [lo, hi],
        "ci_level": level,
        # relative spread of the run, robust to outliers: (p75 - p25) / median
        "iqr_rel": float((np.percentile(x, 75) - np.percentile(x, 25)) / med) if med > 0 else math.nan,
    }


# --------------------------------------------------------------------------------------------------------------
# blocks


def round_sizes(n: int, rounds: int) -> list[int]:
    """How many of ``n`` timed runs each of ``rounds`` rounds holds: ``n // rounds``, the first ``n % rounds``
    rounds one more. The runner schedules rounds with it and the block statistics cut samples with it."""
    return [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]


def block_medians(samples: Sequence[float], n_blocks: int) -> np.ndarray:
    """Medians of ``n_blocks`` contiguous, nearly equal slices of ``samples`` (time order kept)."""
    x = as_array(samples)
    n_blocks = max(1, min(int(n_blocks), x.size))
    return np.array([np.median(b) for b in np.array_split(x, n_blocks)])


def choose_blocks(n_samples: int, rounds: int | None = None) -> int:
    """How many blocks to cut a run into: its interleaved rounds when there are at least 6 (a round spans
    the time the other entries ran too, so its median carries the machine's drift), else 10 contiguous slices of
    at least 5 samples (fewer for very short runs)."""
    if rounds and rounds >= MIN_ROUND_BLOCKS and n_samples >= rounds:
        return int(rounds)
    return int(max(1, min(MIN_BLOCKS, n_samples // 5)))


def run_blocks(samples: Sequence[float], rounds: int | None = None) -> np.ndarray:
    x = as_array(samples)
    return block_medians(x, choose_blocks(x.size, rounds))


def block_groups(n_samples: int, n_blocks: int, rounds: int | None,
                 round_process: Sequence[int] | None) -> np.ndarray | None:
    """The worker process each block was measured in (None when the run used one process per entry).

    Rounds hold ``n // rounds`` samples (the first ``n % rounds`` one more), in order; a block belongs to the
    process of its first sample."""
    if not round_process or not rounds or len(set(round_process)) < 2 or len(round_process) != rounds:
        return None
    sizes = round_sizes(n_samples, rounds)
    per_sample = np.repeat(np.asarray(round_process), sizes)
    starts = [c[0] for c in np.array_split(np.arange(n_samples), n_blocks)]
    return per_sample[starts]


# --------------------------------------------------------------------------------------------------------------
# warm-up


def settled(window_medians: Sequence[float], tolerance: float) -> bool:
    """True when latency has stopped improving: the last window's median is not below the one before by more
    than ``tolerance`` (relative). Warm-up effects (lazy allocation, caches, clocks) make early runs slower;
    a window that is slower again is a busy machine, not warm-up, and does not prolong it."""
    if len(window_medians) < 2:
        return False
    a, b = window_medians[-2], window_medians[-1]
    return a > 0 and b / a >= 1.0 - tolerance


# --------------------------------------------------------------------------------------------------------------
# comparing two runs


@dataclass
class RatioTest:
    """Candidate vs baseline for one entry: ratio of medians, its CI, a block-level test and the verdict."""

    baseline_median_ms: float
    candidate_median_ms: float
    ratio: float                       # candidate / baseline: > 1 is slower
    ratio_ci: tuple[float, float]      # bootstrap over blocks, level 1 - alpha
    p_value: float                     # Mann-Whitney U on block medians, two-sided
    baseline_blocks: int
    candidate_blocks: int
    baseline_spread: float             # half-width of the run's own block-median range, relative (IQR / 2 / median)
    candidate_spread: float
    verdict: str                       # "regression" | "improvement" | "unchanged"
    notes: list[str] = field(default_factory=list)
    decidable: bool = True             # False when the blocks cannot reach significance at alpha
    too_noisy: bool = False            # the run's own spread is too wide to resolve the threshold
    # the smallest slowdown (candidate/baseline - 1) this comparison would flag 80% of the time, from the width
    # of its own confidence interval (see detectable_slowdown)
    detectable: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio_ci"] = list(self.ratio_ci)
        return d


def min_attainable_p(n1: int, n2: int) -> float:
    """Smallest two-sided Mann-Whitney p-value possible with n1 and n2 observations (complete separation)."""
    return 2.0 / math.comb(n1 + n2, n1) if n1 and n2 else 1.0


TRIM = 0.2  # the paired comparison's centre: the mean of the middle 60 % of the per-block log ratios


def trimmed_mean(x: np.ndarray, trim: float = TRIM, axis: int = -1) -> np.ndarray:
    """Mean of what is left after cutting ``trim`` of the values from each end, NaNs ignored (rows may differ
    in length). As robust to a burst that hits one block as the median, but on near-normal per-block ratios it
    wastes less of the data (the median's efficiency is 64 %, a 20 % trimmed mean's about 94 %)."""
    x = np.sort(np.asarray(x, dtype=float), axis=axis)  # NaNs sort last
    x = np.moveaxis(x, axis, -1)
    n = np.sum(~np.isnan(x), axis=-1)
    cut = np.floor(trim * n).astype(int)
    idx = np.arange(x.shape[-1])
    keep = (idx >= cut[..., None]) & (idx < (n - cut)[..., None])
    return np.where(keep, np.nan_to_num(x), 0.0).sum(-1) / np.maximum(keep.sum(-1), 1)


def _boot_medians(blocks: np.ndarray, groups: np.ndarray | None, n_boot: int, rng,
                  center: str = "median") -> np.ndarray:
    """Medians (``center="trimmed"``: trimmed means) of ``n_boot`` bootstrap resamples of ``blocks``; with
    ``groups`` (the process of each block) a two-stage cluster bootstrap: processes with replacement, then blocks
    within each chosen process."""
    k = blocks.size
    stat = (lambda v: np.nanmedian(v, axis=1)) if center == "median" else (lambda v: trimmed_mean(v, axis=1))
    if groups is None:
        return stat(blocks[rng.integers(0, k, size=(n_boot, k))])
    members = [blocks[groups == g] for g in np.unique(groups)]
    p = len(members)
    sizes = np.array([m.size for m in members])
    table = np.full((p, sizes.max()), np.nan)
    for i, m in enumerate(members):
        table[i, : m.size] = m
    picks = rng.integers(0, p, size=(n_boot, p))                       # processes, with replacement
    size_of = sizes[picks][..., None]                                    # (n_boot, p, 1)
    slot = np.arange(sizes.max())
    idx = np.minimum((rng.random((n_boot, p, sizes.max())) * size_of).astype(int), size_of - 1)
    vals = table[picks[..., None], idx]                                  # blocks within each, with replacement
    vals = np.where(slot < size_of, vals, np.nan)                        # a process contributes its own count
    return stat(vals.reshape(n_boot, -1))


def bootstrap_ratio_ci(a_blocks: np.ndarray, b_blocks: np.ndarray, level: float, n_boot: int = 4000,
                       seed: int = 0, a_groups: np.ndarray | None = None,
                       b_groups: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile bootstrap CI of median(b)/median(a), resampling blocks of each run independently (and the
    worker processes first when a run was spread over several)."""
    rng = np.random.default_rng(seed)
    r = _boot_medians(b_blocks, b_groups, n_boot, rng) / _boot_medians(a_blocks, a_groups, n_boot, rng)
    alpha = 1.0 - level
    lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def relative_spread(blocks: np.ndarray) -> float:
    med = float(np.median(blocks))
    if blocks.size < 2 or med <= 0:
        return 0.0
    q1, q3 = np.percentile(blocks, [25, 75])
    return float((q3 - q1) / 2 / med)


def compare_runs(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    threshold: float = 0.05,
    alpha: float = 0.01,
    baseline_rounds: int | None = None,
    candidate_rounds: int | None = None,
    baseline_round_process: Sequence[int] | None = None,
    candidate_round_process: Sequence[int] | None = None,
    n_boot: int = 4000,
    seed: int = 0,
) -> RatioTest:
    """Decide whether ``candidate`` is slower or faster than ``baseline`` (raw per-run latencies, ms).

    A regression needs all three: ratio of medians > 1 + threshold; Mann-Whitney U on block medians p < alpha;
    the bootstrap interval of the ratio (level 1 - alpha) entirely above 1. An improvement mirrors it with
    ratio < 1 / (1 + threshold).
    """
    from scipy.stats import mannwhitneyu

    a = as_array(baseline)
    b = as_array(candidate)
    if a.size == 0 or b.size == 0:
        raise ValueError("both runs need samples")
    ma, mb = float(np.median(a)), float(np.median(b))
    ratio = mb / ma if ma > 0 else math.inf
    ab = run_blocks(a, baseline_rounds)
    bb = run_blocks(b, candidate_rounds)
    notes: list[str] = []
    decidable = min_attainable_p(ab.size, bb.size) < alpha
    if decidable:
        p = float(mannwhitneyu(bb, ab, alternative="two-sided").pvalue)
    else:
        p = 1.0
        notes.append(f"too few samples to test ({ab.size} and {bb.size} blocks); need more iterations")
    ag = block_groups(a.size, ab.size, baseline_rounds, baseline_round_process)
    bg = block_groups(b.size, bb.size, candidate_rounds, candidate_round_process)
    ci = bootstrap_ratio_ci(ab, bb, 1.0 - alpha, n_boot=n_boot, seed=seed, a_groups=ag, b_groups=bg)
    sa, sb = relative_spread(ab), relative_spread(bb)
    verdict = _verdict(ratio, p, ci, decidable=decidable, threshold=threshold, alpha=alpha, notes=notes)
    for who, s in (("baseline", sa), ("candidate", sb)):
        if s > threshold / 2:
            notes.append(f"{who} spread ±{s:.1%} between blocks is too wide to resolve ±{threshold:.0%}")
    return RatioTest(too_noisy=max(sa, sb) > threshold / 2,
        detectable=detectable_slowdown(ci, threshold=threshold, alpha=alpha) if decidable else math.inf,
        baseline_median_ms=ma, candidate_median_ms=mb, ratio=ratio, ratio_ci=ci, p_value=p,
        baseline_blocks=int(ab.size), candidate_blocks=int(bb.size), baseline_spread=sa, candidate_spread=sb,
        verdict=verdict, notes=notes, decidable=decidable,
    )


def detectable_slowdown(ci: tuple[float, float], *, threshold: float, alpha: float, power: float = 0.8) -> float:
    """The smallest slowdown the comparison would call a regression with probability ``power``.

    The CI's half-width in log space, w, is z(1 - alpha/2) standard errors of the log ratio. A true log ratio
    delta is flagged when the interval clears 1 (delta > w) and the ratio clears the threshold
    (delta > log(1 + threshold)); to do so in ``power`` of runs delta needs z(power) standard errors more than
    the larger of the two. Returned as a fraction (0.031 = "could detect a 3.1% slowdown")."""
    from scipy.stats import norm

    lo, hi = ci
    if not (lo > 0 and math.isfinite(hi)):
        return math.inf
    w = (math.log(hi) - math.log(lo)) / 2
    se = w / norm.ppf(1 - alpha / 2)
    delta = max(math.log1p(threshold), w) + norm.ppf(power) * se
    return math.expm1(delta)


def _verdict(ratio: float, p: float, ci: tuple[float, float], *, decidable: bool, threshold: float, alpha: float,
             notes: list[str]) -> str:
    """The one rule both comparisons use: a change is called only when the factor is beyond the threshold, the test
    is significant and the whole confidence interval lies on the same side of 1."""
    up, down = 1.0 + threshold, 1.0 / (1.0 + threshold)
    if decidable and ratio > up and p < alpha and ci[0] > 1.0:
        return "regression"
    if decidable and ratio < down and p < alpha and ci[1] < 1.0:
        return "improvement"
    if ratio > up or ratio < down:
        notes.append(f"ratio {ratio:.3f} is beyond the ±{threshold:.0%} threshold but not significant "
                     f"(p={p:.2g}, CI {ci[0]:.3f}–{ci[1]:.3f})")
    return "unchanged"


def compare_paired(
    baseline_rounds: Sequence[float],
    candidate_rounds: Sequence[float],
    *,
    baseline_median: float,
    candidate_median: float,
    threshold: float = 0.05,
    alpha: float = 0.01,
    round_process: Sequence[int] | None = None,
    n_boot: int = 4000,
    seed: int = 0,
    unit: str = "round",
    center: str = "median",
) -> RatioTest:
    """Two entries timed side by side in one run (``hvit-bench --against``): round r of the candidate ran right
    next to round r of the baseline, so each round gives one log ratio d_r in which the machine's drift cancels.

    p: Wilcoxon signed-rank test on d_r; CI: bootstrap of the median d_r (``center="trimmed"``: of the 20 %
    trimmed mean) over rounds, worker processes first when the rounds came from several; the verdict rule is
    :func:`compare_runs`'s. On 8 real A/A gates the two centres resolved about the same (median "could detect"
    2.5 % vs 2.8-3.0 % on 6 of them, 3.6 % vs 3.1 % for OpenVINO on the other 2; ``benchmarks/gate_power.py
    --analyse``), so the median, robust and simple, stays."""
    from scipy.stats import wilcoxon

    a, b = as_array(baseline_rounds), as_array(candidate_rounds)
    if a.size != b.size or a.size == 0:
        raise ValueError("paired comparison needs the same number of rounds on both sides")
    d = np.log(b / a)
    ratio = candidate_median / baseline_median if baseline_median > 0 else math.inf
    notes = [f"paired by {unit}: {a.size} {unit}s timed side by side in one run"]
    decidable = 2.0 / 2 ** a.size < alpha
    if not decidable:
        p = 1.0
        notes.append(f"too few {unit}s to test ({a.size}); use --rounds 8 or more")
    elif np.all(d == 0):
        p = 1.0
    else:
        p = float(wilcoxon(d, alternative="two-sided").pvalue)
    groups = np.asarray(round_process) if round_process is not None and len(set(round_process)) > 1 else None
    rng = np.random.default_rng(seed)
    boot = _boot_medians(d, groups, n_boot, rng, center=center)
    lo, hi = np.exp(np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    ci = (float(lo), float(hi))
    spread = relative_spread(np.exp(d))
    verdict = _verdict(ratio, p, ci, decidable=decidable, threshold=threshold, alpha=alpha, notes=notes)
    if spread > threshold / 2:
        notes.append(f"round-to-round spread of the paired ratio ±{spread:.1%} is too wide to resolve ±{threshold:.0%}")
    return RatioTest(too_noisy=spread > threshold / 2,
        detectable=detectable_slowdown(ci, threshold=threshold, alpha=alpha) if decidable else math.inf,
        baseline_median_ms=float(baseline_median), candidate_median_ms=float(candidate_median), ratio=ratio,
        ratio_ci=ci, p_value=p, baseline_blocks=int(a.size), candidate_blocks=int(b.size),
        baseline_spread=spread, candidate_spread=spread, verdict=verdict, notes=notes, decidable=decidable,
    )


def speedup(reference: Sequence[float], other: Sequence[float], *, level: float = DEFAULT_CI_LEVEL,
            reference_rounds: int | None = None, other_rounds: int | None = None,
            reference_round_process: Sequence[int] | None = None,
            other_round_process: Sequence[int] | None = None) -> dict:
    """How many times faster ``other`` is than ``reference`` (median ratio reference/other) with a block
    bootstrap CI; used for the "vs torch" and "vs original" columns of one run."""
    ra, ob = as_array(reference), as_array(other)
    s = float(np.median(ra) / np.median(ob))
    rb, obb = run_blocks(ra, reference_rounds), run_blocks(ob, other_rounds)
    rg = block_groups(ra.size, rb.size, reference_rounds, reference_round_process)
    og = block_groups(ob.size, obb.size, other_rounds, other_round_process)
    lo, hi = bootstrap_ratio_ci(obb, rb, level, n_boot=2000, a_groups=og, b_groups=rg)  # median(ref)/median(other)
    return {"speedup": s, "ci": [lo, hi]}
