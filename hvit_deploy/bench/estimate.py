"""How long an ``hvit-bench`` run will take, said up front once warm-up has measured the speed.

Pure functions (no clock, no processes): the runner hands in what warm-up measured (the latest window median of
each entry set up so far, ms per run) and the planned entries; :func:`estimate_run` adds up ``iterations`` timed
runs of every entry, an entry not yet warmed up taken as the mean of the measured entries of its model (or, for
a model none of whose entries ran yet, of all measured entries: said in the message). :func:`estimate_message`
is the line printed, with how to shorten a long run: fewer ``--iters`` (the count that fits ``target_s``) or
fewer ``--models`` (the slowest left out). Warm-up, loading and exporting are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

TARGET_S = 600.0   # a run longer than this gets the advice how to shorten it


@dataclass
class Estimate:
    seconds: float                     # timed runs of every planned entry
    entries: int
    iterations: int
    measured: int                      # entries whose speed warm-up measured
    guessed_models: list[str] = field(default_factory=list)   # models with no entry measured yet
    per_model: dict[str, float] = field(default_factory=dict)  # seconds per model, in plan order


def estimate_run(measured_ms: dict[tuple[str, str], float], planned: list[tuple[str, str]],
                 iterations: int) -> Estimate | None:
    """``measured_ms``: (model, entry) -> ms per run from warm-up; ``planned``: every (model, entry) of the run.
    None until at least one entry is measured."""
    known = {k: v for k, v in measured_ms.items() if v is not None and v >= 0 and math.isfinite(v)}
    if not known or not planned:
        return None
    overall = sum(known.values()) / len(known)
    by_model: dict[str, list[float]] = {}
    for (model, _), ms in known.items():
        by_model.setdefault(model, []).append(ms)
    per_model: dict[str, float] = {}
    guessed: list[str] = []
    for model, entry in planned:
        ms = known.get((model, entry))
        if ms is None:
            mine = by_model.get(model)
            ms = sum(mine) / len(mine) if mine else overall
            if not mine and model not in guessed:
                guessed.append(model)
        per_model[model] = per_model.get(model, 0.0) + ms * iterations / 1e3
    return Estimate(seconds=sum(per_model.values()), entries=len(planned), iterations=iterations,
                    measured=sum(1 for k in planned if k in known), guessed_models=guessed, per_model=per_model)


def format_duration(seconds: float) -> str:
    """``1 h 12 min``, ``14 min``, ``45 s``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    minutes = int(round(s / 60))
    if minutes < 60:
        return f"{minutes} min"
    h, m = divmod(minutes, 60)
    return f"{h} h {m} min" if m else f"{h} h"


def iterations_for(est: Estimate, target_s: float = TARGET_S, min_iters: int = 1) -> int:
    """The ``--iters`` that brings the timed runs to about ``target_s`` (two significant figures, at least
    ``min_iters``: the rounds)."""
    n = est.iterations * target_s / est.seconds if est.seconds > 0 else est.iterations
    if n >= 100:
        digits = 10 ** (len(str(int(n))) - 2)
        n = n // digits * digits
    return max(int(min_iters), int(n))


def models_for(est: Estimate, target_s: float = TARGET_S) -> tuple[list[str], list[str]]:
    """(models kept, models left out): the slowest left out until the rest fit ``target_s`` (one always kept)."""
    kept = list(est.per_model)
    dropped: list[str] = []
    while len(kept) > 1 and sum(est.per_model[m] for m in kept) > target_s:
        slowest = max(kept, key=lambda m: est.per_model[m])
        kept.remove(slowest)
        dropped.append(slowest)
    return kept, dropped


def estimate_message(est: Estimate, *, target_s: float = TARGET_S, min_iters: int = 1) -> str:
    """The line ``hvit-bench`` prints: the estimate and, for a run longer than ``target_s``, how to shorten it."""
    line = (f"estimated {format_duration(est.seconds)} of timed runs for {est.entries} entr"
            f"{'y' if est.entries == 1 else 'ies'} x {est.iterations} runs")
    if est.guessed_models:
        line += f" ({', '.join(est.guessed_models)} not measured yet: taken as fast as the rest)"
    if est.seconds <= target_s:
        return line
    hints = []
    n = iterations_for(est, target_s, min_iters)
    if n < est.iterations:
        hints.append(f"--iters {n} (about {format_duration(est.seconds * n / est.iterations)})")
    kept, dropped = models_for(est, target_s)
    if dropped:
        rest = sum(est.per_model[m] for m in kept)
        hints.append(f"--models {' '.join(kept)} (without {', '.join(dropped)}: {format_duration(rest)})")
    return line + ("; shorten with " + " or ".join(hints) if hints else "")
