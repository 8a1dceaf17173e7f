"""``hvit-bench compare BASELINE.json CANDIDATE.json``: per-entry verdicts for CI.

Entries are matched by (model, backend, form, batch; the form is the file's ``variant`` key, an entry without
``batch_size`` is batch 1, so a baseline from before the batch sweep matches a sweep's batch-1 entries). For each pair whose
settings and environment agree, the raw ``samples_ms`` are compared with :func:`.stats.compare_runs` (ratio of medians, bootstrap CI over block
medians, Mann-Whitney U on block medians) and get a verdict:

* ``regression`` / ``improvement`` — beyond the threshold *and* significant *and* the CI excludes 1;
* ``unchanged`` — anything else (with a note when the ratio passed the threshold but the test did not);
* ``new`` — measured in the candidate only; ``missing`` — measured in the baseline only (or failed in the
  candidate);
* ``not comparable`` — settings (threads, input shape, ...) or the environment that matters for the entry
  (CPU model, cores, OS, GPU, the runtime's version) differ; the differing fields are named.

Exit codes of the command: 1 when anything regressed, 0 otherwise, 2 for unusable input; with ``--strict``, 4
when nothing regressed but entries are missing or not comparable (so CI can re-measure the baseline).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..runtimes import gpu_runtimes, list_runtimes
from .environment import get_field
from .results import SETTINGS_FIELDS
from .schema import ResultsDoc, ResultsEntry, as_doc
from .stats import compare_paired, compare_runs

VERDICT_ORDER = ("regression", "missing", "not comparable", "improvement", "new", "unchanged")

# environment fields that must agree for every entry, and per backend
HARDWARE = ("cpu.model", "cpu.logical_cores", "cpu.available_cores", "os.system", "os.machine")
VERSIONS_ALL = ("versions.python",)
# per runtime, the version field its package writes (from the runtime registry)
VERSIONS_BY_BACKEND = {r.name: (f"versions.{r.package}",) for r in list_runtimes()}
GPU_BACKENDS = gpu_runtimes()
# shown in the report's environment section but never a reason to refuse a comparison
INFORMATIONAL = ("git.commit", "versions.hvit-deploy", "versions.onnx", "versions.onnxsim", "versions.numpy",
                 "versions.timm", "os.release", "memory_gb", "cpu.governor", "cpu.cgroup_quota_cores")


@dataclass
class Row:
    model: str
    backend: str
    form: str            # rewritten | original | int8 (``variant`` in JSON)
    verdict: str
    baseline_ms: float | None = None
    candidate_ms: float | None = None
    ratio: float | None = None
    ratio_ci: tuple[float, float] | None = None
    p_value: float | None = None
    notes: list[str] = field(default_factory=list)
    test: dict | None = None
    detectable: float | None = None     # smallest slowdown this comparison would flag (80% power), a fraction
    inconclusive: bool = False          # unchanged, but it could not have detected the slowdown asked for
    batch: int = 1                      # images per timed call (the batch sweep)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.backend}/{self.form}" + (f"/batch {self.batch}" if self.batch != 1 else "")

    def to_dict(self) -> dict:
        return {"model": self.model, "backend": self.backend, "variant": self.form, "batch": self.batch,
                "verdict": self.verdict,
                "baseline_median_ms": self.baseline_ms, "candidate_median_ms": self.candidate_ms,
                "ratio": self.ratio, "ratio_ci": list(self.ratio_ci) if self.ratio_ci else None,
                "p_value": self.p_value, "detectable_slowdown": self.detectable, "inconclusive": self.inconclusive,
                "notes": self.notes}


@dataclass
class EnvDiff:
    field: str
    baseline: object
    candidate: object
    scope: str          # "all entries", a backend list, or "informational"


@dataclass
class Comparison:
    rows: list[Row]
    env_diffs: list[EnvDiff]
    threshold: float
    alpha: float
    warnings: list[str] = field(default_factory=list)
    skipped_both: list[str] = field(default_factory=list)
    baseline_name: str = "baseline"
    candidate_name: str = "candidate"
    baseline_meta: dict = field(default_factory=dict)
    candidate_meta: dict = field(default_factory=dict)
    paired: bool = False  # both files come from one `hvit-bench --against` run: rounds are compared pairwise
    power_target: float | None = None  # --require-power: the slowdown every unchanged entry must be able to see
    power_targets: dict = field(default_factory=dict)  # --require-power RUNTIME=SLOWDOWN: that runtime's own

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.rows)

    def summary(self) -> str:
        n_reg, n_imp = self.count("regression"), self.count("improvement")
        parts = [f"{n_reg} regression{'s' if n_reg != 1 else ''}", f"{n_imp} improvement{'s' if n_imp != 1 else ''}"]
        for v in ("unchanged", "new", "missing", "not comparable"):
            n = self.count(v)
            if n:
                parts.append(f"{n} {v}")
        return ", ".join(parts)

    def inconclusive(self) -> list[Row]:
        return [r for r in self.rows if r.inconclusive]

    def require_power(self, slowdown: float, per_runtime: dict[str, float] | None = None) -> None:
        """Mark as inconclusive every unchanged entry that could not have detected ``slowdown`` (a fraction; for a
        runtime named in ``per_runtime``, its own figure) with 80% power: its 'unchanged' is no evidence, and the
        gate measures more instead of passing it."""
        self.power_target = slowdown
        self.power_targets = dict(per_runtime or {})
        for r in self.rows:
            want = self.power_targets.get(r.backend, slowdown)
            r.inconclusive = r.verdict == "unchanged" and not (r.detectable is not None and r.detectable <= want)

    def exit_code(self, strict: bool = False, require_power: bool = False) -> int:
        """0 no regression, 1 regression, 4 (``strict``) missing or not comparable, 5 (``require_power``,
        after :meth:`require_power`) some entry unchanged but unable to detect the slowdown asked for."""
        if self.count("regression"):
            return 1
        if strict and (self.count("missing") or self.count("not comparable")):
            return 4
        if require_power and self.inconclusive():
            return 5
        return 0

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "threshold": self.threshold, "alpha": self.alpha,
                "rows": [r.to_dict() for r in self.rows],
                "environment_differences": [d.__dict__ for d in self.env_diffs], "warnings": self.warnings}


def _fmt(v) -> str:
    if isinstance(v, list):
        return ", ".join(str(x.get("name", x)) if isinstance(x, dict) else str(x) for x in v) or "none"
    return "—" if v is None else str(v)


def environment_diffs(base_env: dict, cand_env: dict) -> list[EnvDiff]:
    diffs = []
    fields = list(HARDWARE) + ["gpu"] + list(VERSIONS_ALL) + sorted(
        {f for fs in VERSIONS_BY_BACKEND.values() for f in fs}) + list(INFORMATIONAL)
    for f in fields:
        a, b = get_field(base_env, f), get_field(cand_env, f)
        if f == "gpu":
            a = [g.get("name") for g in a or []]
            b = [g.get("name") for g in b or []]
        if a == b:
            continue
        if f in HARDWARE or f in VERSIONS_ALL:
            scope = "all entries"
        elif f == "gpu":
            scope = "GPU backends"
        elif f in INFORMATIONAL:
            scope = "informational"
        else:
            scope = ", ".join(k for k, v in VERSIONS_BY_BACKEND.items() if f in v)
        diffs.append(EnvDiff(f, _fmt(a), _fmt(b), scope))
    return diffs


def _env_blockers(backend: str, diffs: list[EnvDiff]) -> list[str]:
    out = []
    for d in diffs:
        if d.scope == "all entries" or (d.scope == "GPU backends" and backend in GPU_BACKENDS) or (
                d.field in VERSIONS_BY_BACKEND.get(backend, ())):
            out.append(f"{d.field}: {d.baseline} vs {d.candidate}")
    return out


def _settings_blockers(a: ResultsEntry, b: ResultsEntry) -> list[str]:
    out = []
    for f in SETTINGS_FIELDS:
        va, vb = getattr(a, f), getattr(b, f)
        if va is not None and vb is not None and va != vb:
            out.append(f"{f}: {_fmt(va)} vs {_fmt(vb)}")
    return out


def _state(e: ResultsEntry | None) -> str:
    if e is None:
        return "absent"
    why = e.why()
    return f"{e.status}: {why}" if why else e.status


def _test(b: ResultsEntry, c: ResultsEntry, paired: bool, *, threshold: float, alpha: float, seed: int):
    """The statistical comparison of two comparable entries (pairwise rounds for an --against pair)."""
    rb, rc = b.round_medians_ms, c.round_medians_ms
    if paired and len(rb) == len(rc) >= 2:
        return compare_paired(rb, rc, baseline_median=float(np.median(b.samples_ms)),
                              candidate_median=float(np.median(c.samples_ms)), threshold=threshold, alpha=alpha,
                              round_process=c.round_process, seed=seed,
                              unit="block" if c.pairing_mode else "round")
    return compare_runs(b.samples_ms, c.samples_ms, threshold=threshold, alpha=alpha, baseline_rounds=b.rounds,
                        candidate_rounds=c.rounds, baseline_round_process=b.round_process,
                        candidate_round_process=c.round_process, seed=seed)


def _compare_pair(row: Row, b: ResultsEntry, c: ResultsEntry, diffs: list[EnvDiff], paired: bool, *,
                  threshold: float, alpha: float, allow_env_diff: bool, seed: int) -> bool:
    """Fill ``row`` for two measured entries; True when it was measured in one worker process per run only."""
    blockers = _settings_blockers(b, c)
    env_block = _env_blockers(row.backend, diffs)
    if env_block and not allow_env_diff:
        blockers += env_block
    if blockers:
        row.verdict = "not comparable"
        row.notes.append("differs: " + "; ".join(blockers))
        return False
    if env_block:
        row.notes.append("compared despite environment differences: " + "; ".join(env_block))
    t = _test(b, c, paired, threshold=threshold, alpha=alpha, seed=seed)
    row.verdict = t.verdict
    row.ratio, row.ratio_ci, row.p_value = t.ratio, t.ratio_ci, t.p_value
    row.baseline_ms, row.candidate_ms = t.baseline_median_ms, t.candidate_median_ms
    row.notes += t.notes
    row.test = t.to_dict()
    row.detectable = t.detectable
    if b.iterations != c.iterations:
        row.notes.append(f"iterations differ ({b.iterations} vs {c.iterations})")
    paired_rounds = paired and len(b.round_medians_ms) == len(c.round_medians_ms) >= 2
    return not paired_rounds and any((d.processes or 1) < 2 for d in (b, c))


def _warnings(rows: list[Row], one_process: list[str], threshold: float, docs) -> list[str]:
    warnings = []
    if any((r.test or {}).get("too_noisy") for r in rows):
        warnings.append(f"some runs are too noisy to resolve a ±{threshold:.0%} change; quieten the machine, "
                        "use more iterations/rounds, or raise --threshold")
    if one_process:
        warnings.append(f"{len(one_process)} entr{'y was' if len(one_process) == 1 else 'ies were'} measured in a single "
                        "worker process per run: process-to-process variation (memory layout, core placement; often "
                        "a few %) is then outside the interval; record with --processes 3 or more (the ci profile does)")
    for name, doc in docs:
        if doc.status == "interrupted":
            warnings.append(f"the {name} run was interrupted; its unfinished entries count as missing")
    return warnings


def compare_docs(base: ResultsDoc | dict, cand: ResultsDoc | dict, *, threshold: float = 0.05, alpha: float = 0.01,
                 allow_env_diff: bool = False, seed: int = 0) -> Comparison:
    base, cand = as_doc(base), as_doc(cand)
    diffs = environment_diffs(base.environment or {}, cand.environment or {})
    pb, pc = base.pairing or {}, cand.pairing or {}
    paired = bool(pb.get("run")) and pb.get("run") == pc.get("run") and pb.get("side") != pc.get("side")
    bmap = {e.key: e for e in base.results}
    cmap = {e.key: e for e in cand.results}
    rows: list[Row] = []
    skipped_both: list[str] = []
    one_process: list[str] = []
    for key in list(dict.fromkeys(list(bmap) + list(cmap))):
        b, c = bmap.get(key), cmap.get(key)
        b_ok = b is not None and b.status == "ok"
        c_ok = c is not None and c.status == "ok"
        model, backend, form, batch = key
        row = Row(model, backend, form, verdict="unchanged", batch=batch)
        row.baseline_ms = b.median_ms if b_ok else None
        row.candidate_ms = c.median_ms if c_ok else None
        if not b_ok and not c_ok:
            skipped_both.append(f"{row.label} (baseline {_state(b)}; candidate {_state(c)})")
            continue
        if b_ok and not c_ok:
            row.verdict = "missing"
            row.notes.append(f"candidate: {_state(c)}")
        elif c_ok and not b_ok:
            row.verdict = "new"
            if b is not None:
                row.notes.append(f"baseline: {_state(b)}")
        elif _compare_pair(row, b, c, diffs, paired, threshold=threshold, alpha=alpha,
                           allow_env_diff=allow_env_diff, seed=seed):
            one_process.append(row.label)
        rows.append(row)
    rows.sort(key=_severity)
    warnings = _warnings(rows, one_process, threshold, (("baseline", base), ("candidate", cand)))
    cmp = Comparison(rows=rows, env_diffs=diffs, threshold=threshold, alpha=alpha, warnings=warnings,
                     skipped_both=skipped_both)
    cmp.paired = paired
    return cmp


def _severity(r: Row):
    rank = VERDICT_ORDER.index(r.verdict)
    if r.verdict == "regression":
        return (rank, -(r.ratio or 0))
    if r.verdict == "improvement":
        return (rank, r.ratio or 0)
    return (rank, r.model, r.backend, r.form, r.batch)


def parse_threshold(text: str) -> float:
    """``5%``, ``0.05`` or ``5`` (read as percent when above 1) → 0.05."""
    s = str(text).strip()
    pct = s.endswith("%")
    try:
        v = float(s.rstrip("%"))
    except ValueError:
        raise ValueError(f"threshold {text!r} is not a number like 5% or 0.05") from None
    if pct or v >= 1:
        v /= 100
    if not 0 < v < 1:
        raise ValueError(f"threshold {text!r} must be between 0% and 100%")
    return v
