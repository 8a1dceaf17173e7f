"""PNG plots of latency distributions (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..utils.io import atomic_write_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _clip(x: np.ndarray) -> np.ndarray:
    """Drop the slowest 0.5 % so one stall does not flatten every violin (the table keeps max and p99)."""
    if x.size < 20:
        return x
    return x[x <= np.percentile(x, 99.5)]


def _save(fig, path: str | Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    try:
        return atomic_write_bytes(path, buf.getvalue())
    except OutputError:
        raise


def plot_results(doc, path: str | Path) -> Path:
    """One horizontal violin per (model, backend, form), grouped by model, median marked."""
    from .schema import as_doc

    plt = _plt()
    entries = [e for e in as_doc(doc).results if e.samples_ms]
    if not entries:
        raise OutputError("nothing to plot: no entry has samples")
    models = list(dict.fromkeys(e.model for e in entries))
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 1.0 + 0.55 * max(3, len(entries) / len(models)) * len(models)),
                             squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        es = [e for e in entries if e.model == model]
        data = [_clip(np.asarray(e.samples_ms, dtype=float)) for e in es]
        batches = sorted({e.batch for e in es})
        labels = [f"{e.backend} · {e.form}" + (f" · batch {e.batch}" if batches != [1] else "") for e in es]
        pos = np.arange(len(es))
        parts = ax.violinplot(data, positions=pos, vert=False, showextrema=False, widths=0.8)
        for body in parts["bodies"]:
            body.set_alpha(0.55)
        ax.scatter([np.median(np.asarray(e.samples_ms)) for e in es], pos, marker="|", s=200, color="black",
                   zorder=3, label="median")
        ax.set_yticks(pos, labels)
        at = "batch 1" if batches == [1] else "batches " + ", ".join(map(str, batches))
        ax.set_title(f"{model} — {at}, {es[0].threads} threads", fontsize=10)
        ax.set_xlabel("latency per timed call (ms)" if batches != [1] else "latency (ms)")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_compare(base, cand, cmp, path: str | Path) -> Path:
    """Baseline vs candidate distributions for every compared entry, verdict in the title."""
    from .schema import as_doc

    plt = _plt()
    bmap = {e.key: e for e in as_doc(base).results if e.samples_ms}
    cmap = {e.key: e for e in as_doc(cand).results if e.samples_ms}
    def key(r):  # the entry key of a comparison row: (model, backend, form, batch)
        return (r.model, r.backend, r.form, r.batch)

    rows = [r for r in cmp.rows if key(r) in bmap and key(r) in cmap]
    if not rows:
        raise OutputError("nothing to plot: no entry has samples in both files")
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.6 * len(rows) + 0.6), squeeze=False)
    for ax, r in zip(axes[:, 0], rows):
        k = key(r)
        a = _clip(np.asarray(bmap[k].samples_ms, dtype=float))
        b = _clip(np.asarray(cmap[k].samples_ms, dtype=float))
        parts = ax.violinplot([a, b], positions=[1, 0], vert=False, showextrema=False, widths=0.85)
        for body, color in zip(parts["bodies"], ("tab:blue", "tab:orange")):
            body.set_facecolor(color)
            body.set_alpha(0.55)
        ax.scatter([np.median(a), np.median(b)], [1, 0], marker="|", s=200, color="black", zorder=3)
        ax.set_yticks([1, 0], ["baseline", "candidate"])
        ratio = f", ratio {r.ratio:.3f}" if r.ratio else ""
        ax.set_title(f"{r.label}: {r.verdict}{ratio}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("latency (ms)")
    fig.tight_layout()
    return _save(fig, path)
