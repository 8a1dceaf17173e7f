"""The timing loop and warm-up of the worker, on plain Python callables (no runtime needed)."""
from __future__ import annotations

import time

from hvit_deploy.bench.worker import timed_runs, warm_up


def test_timed_runs_measures_only_the_call():
    calls = []
    ns = timed_runs(lambda: time.sleep(0.002), 5, progress=calls.append, interval_ns=0)
    assert len(ns) == 5 and all(2_000_000 <= v < 50_000_000 for v in ns)
    assert calls == [1, 2, 3, 4, 5]  # progress reported between calls, outside the timed region


def test_warm_up_stops_when_settled_or_capped():
    cfg = {"min_runs": 3, "window": 4, "tolerance": 0.5, "max_runs": 100, "max_seconds": 10}
    wu = warm_up(lambda: time.sleep(0.001), cfg)
    assert wu.settled and wu.runs == 3 + 2 * 4  # two windows are needed to compare medians

    state = {"n": 0}

    def faster_each_time():  # never settles: each window is twice as fast as the last
        state["n"] += 1
        time.sleep(0.064 * 0.5 ** (state["n"] // 4))

    wu = warm_up(faster_each_time, {"min_runs": 1, "window": 4, "tolerance": 0.05, "max_runs": 25,
                                    "max_seconds": 10})
    assert not wu.settled and wu.runs <= 25 and "max_runs" in wu.not_settled_because
