"""Markdown and terminal renderings of a :class:`.compare.Comparison`."""
from __future__ import annotations

from .compare import Comparison, Row

MARK = {"regression": "▲", "improvement": "▼", "missing": "?", "not comparable": "≠", "new": "+", "unchanged": ""}


def _ms(v) -> str:
    return "" if v is None else f"{v:.3f}"


def _ratio(r: Row) -> str:
    if r.ratio is None:
        return ""
    return f"{r.ratio:.3f} ({(r.ratio - 1) * 100:+.1f}%)"


def _ci(r: Row) -> str:
    return "" if not r.ratio_ci else f"{r.ratio_ci[0]:.3f}–{r.ratio_ci[1]:.3f}"


def _p(r: Row) -> str:
    if r.p_value is None:
        return ""
    return f"{r.p_value:.1e}" if r.p_value < 1e-3 else f"{r.p_value:.3f}"


def _power(r: Row) -> str:
    """What the comparison could have seen: '≥3.1%' (the smallest slowdown it flags 80% of the time)."""
    if r.detectable is None:
        return ""
    if r.detectable == float("inf"):
        return "nothing (too few blocks)"
    return f"≥{r.detectable:.1%}" + (" (inconclusive)" if r.inconclusive else "")


def table_rows(cmp: Comparison) -> list[list[str]]:
    return [[f"{MARK[r.verdict]} {r.verdict}".strip(), r.model, r.backend,
             r.form + (f" (batch {r.batch})" if r.batch != 1 else ""), _ms(r.baseline_ms),
             _ms(r.candidate_ms), _ratio(r), _ci(r), _p(r), _power(r), "; ".join(r.notes)] for r in cmp.rows]


HEADERS = ["verdict", "model", "backend", "variant", "baseline ms", "candidate ms", "ratio", "CI", "p",
           "could detect", "notes"]


def _headers(cmp: Comparison) -> list[str]:
    h = list(HEADERS)
    h[7] = f"{1 - cmp.alpha:.0%} CI"
    return h


def _escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown(cmp: Comparison) -> str:
    """The report: one-line summary, the table sorted by severity, then the environment differences."""
    n_reg = cmp.count("regression")
    head = "❌" if n_reg else "✅"
    lines = [f"## {head} Latency: {cmp.summary()}", ""]
    if cmp.paired:
        how = (f"Both were timed side by side in one run (`hvit-bench --against`), round by round, so the "
               f"machine's drift cancels: a change counts when the ratio of medians is beyond ±{cmp.threshold:.0%}, "
               f"the Wilcoxon signed-rank test on the per-round ratios gives p < {cmp.alpha:g} and their "
               f"{1 - cmp.alpha:.0%} bootstrap interval excludes 1.")
    else:
        how = (f"A change counts when the ratio of medians is beyond ±{cmp.threshold:.0%}, the Mann-Whitney U "
               f"test on block medians gives p < {cmp.alpha:g} and the {1 - cmp.alpha:.0%} bootstrap interval of "
               f"the ratio excludes 1.")
    lines.append(
        f"Baseline `{cmp.baseline_name}`{_meta(cmp.baseline_meta)}; candidate `{cmp.candidate_name}`"
        f"{_meta(cmp.candidate_meta)}. {how} Ratio = candidate / baseline (above 1 is slower).")
    lines.append("")
    if cmp.rows:
        hdr = _headers(cmp)
        lines.append("| " + " | ".join(hdr) + " |")
        lines.append("|" + "|".join("---" if i < 4 or i == len(hdr) - 1 else "---:" for i in range(len(hdr))) + "|")
        for row in table_rows(cmp):
            lines.append("| " + " | ".join(_escape(c) for c in row) + " |")
    else:
        lines.append("_No entries to compare._")
    if cmp.skipped_both:
        lines += ["", "Not measured in either run: " + "; ".join(cmp.skipped_both) + "."]
    lines += ["", "### Environment differences", ""]
    if cmp.env_diffs:
        lines.append("| field | baseline | candidate | blocks comparison of |")
        lines.append("|---|---|---|---|")
        for d in cmp.env_diffs:
            scope = "— (informational)" if d.scope == "informational" else d.scope
            lines.append(f"| {d.field} | {_escape(str(d.baseline))} | {_escape(str(d.candidate))} | {scope} |")
    else:
        lines.append("None: same machine, OS and runtime versions.")
    if cmp.inconclusive():
        n = len(cmp.inconclusive())
        own = "".join(f", {rt} {v:.0%}" for rt, v in sorted(cmp.power_targets.items()))
        lines += ["", f"**Inconclusive**: {n} entr{'y' if n == 1 else 'ies'} could not have detected a "
                  f"{cmp.power_target:.0%} slowdown{f' ({own[2:]})' if own else ''} (see 'could detect'); measure "
                  "more (more rounds) before trusting 'unchanged'."]
    if cmp.warnings:
        lines += ["", "### Warnings", ""] + [f"- {w}" for w in cmp.warnings]
    return "\n".join(lines) + "\n"


def _meta(meta: dict) -> str:
    bits = []
    if meta.get("commit"):
        bits.append(f"commit {meta['commit'][:10]}")
    if meta.get("created"):
        bits.append(meta["created"])
    if meta.get("profile"):
        bits.append(f"profile {meta['profile']}")
    return f" ({', '.join(bits)})" if bits else ""


def terminal(cmp: Comparison, fmt: str = "table") -> str:
    from tabulate import tabulate

    if fmt == "md":
        return markdown(cmp)
    text = [cmp.summary(), ""]
    if cmp.rows:
        text.append(tabulate(table_rows(cmp), headers=_headers(cmp), tablefmt="simple", disable_numparse=True))
    for d in cmp.env_diffs:
        if d.scope != "informational":
            text.append(f"environment differs: {d.field}: {d.baseline} vs {d.candidate} ({d.scope})")
    text += [f"warning: {w}" for w in cmp.warnings]
    return "\n".join(text)
