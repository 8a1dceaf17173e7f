"""The run-length estimate hvit-bench prints once warm-up has measured the speed (hvit_deploy.bench.estimate):
pure arithmetic on the measured ms per run and the plan, no clock."""
from __future__ import annotations

import math

from hvit_deploy.bench.estimate import (Estimate, estimate_message, estimate_run, format_duration, iterations_for,
                                        models_for)

PLAN = [("acmix", "acmix/torch"), ("acmix", "acmix/ov"), ("smt", "smt/torch"), ("smt", "smt/ov"),
        ("twins", "twins/torch")]


def test_unmeasured_entries_take_their_models_mean_then_the_overall_mean():
    est = estimate_run({("acmix", "acmix/torch"): 900.0, ("smt", "smt/torch"): 30.0}, PLAN, 4000)
    # acmix/ov as acmix/torch (900), smt/ov as smt/torch (30), twins as the mean of all measured (465)
    assert est.per_model == {"acmix": 7200.0, "smt": 240.0, "twins": 1860.0}
    assert est.seconds == 9300.0 and est.entries == 5 and est.measured == 2 and est.guessed_models == ["twins"]


def test_nothing_measured_or_planned_is_no_estimate():
    assert estimate_run({}, PLAN, 100) is None
    assert estimate_run({("a", "a/t"): 1.0}, [], 100) is None
    assert estimate_run({("a", "a/t"): math.nan}, [("a", "a/t")], 100) is None


def test_durations_read_as_people_say_them():
    assert [format_duration(s) for s in (0, 44.6, 60, 14 * 60 + 20, 3600, 72 * 60, 9300)] == [
        "0 s", "45 s", "1 min", "14 min", "1 h", "1 h 12 min", "2 h 35 min"]


def test_the_iters_and_models_that_fit_the_target():
    est = Estimate(seconds=4320.0, entries=24, iterations=4000, measured=24,
                   per_model={"a": 3000.0, "b": 1000.0, "c": 320.0})
    assert iterations_for(est, 600) == 550             # 555.6 to two significant figures, rounded down
    assert iterations_for(est, 600, min_iters=800) == 800
    assert iterations_for(Estimate(seconds=700.0, entries=1, iterations=40, measured=1), 600) == 34
    assert models_for(est, 600) == (["c"], ["a", "b"])
    assert models_for(est, 1500) == (["b", "c"], ["a"])
    assert models_for(Estimate(seconds=9e3, entries=1, iterations=4000, measured=1, per_model={"a": 9e3})) == (["a"], [])


def test_the_line_printed_and_its_advice():
    est = Estimate(seconds=4320.0, entries=24, iterations=4000, measured=24,
                   per_model={"a": 3000.0, "b": 1000.0, "c": 320.0})
    assert estimate_message(est) == (
        "estimated 1 h 12 min of timed runs for 24 entries x 4000 runs; shorten with --iters 550 (about 10 min) "
        "or --models c (without a, b: 5 min)")
    short = Estimate(seconds=90.0, entries=1, iterations=200, measured=0, guessed_models=["x"], per_model={"x": 90.0})
    assert estimate_message(short) == ("estimated 2 min of timed runs for 1 entry x 200 runs (x not measured yet: "
                                       "taken as fast as the rest)")
    one = Estimate(seconds=1200.0, entries=2, iterations=4000, measured=2, per_model={"a": 1200.0})
    assert estimate_message(one) == ("estimated 20 min of timed runs for 2 entries x 4000 runs; shorten with "
                                     "--iters 2000 (about 10 min)")
