"""The timing loop and warm-up of the worker, on plain Python callables (no runtime needed); the typed messages
and the bench request."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

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


def test_messages_keep_protocol_1_on_the_wire():
    """The typed commands and replies read and write the JSON protocol 1 always carried (``--against`` talks to
    an older checkout's worker): warm-up and the paired artifact travel inside ``spec``."""
    from hvit_deploy.bench import messages as m
    from hvit_deploy.runtimes import RuntimeSpec

    wu = {"min_runs": 3, "window": 4, "tolerance": 0.5, "max_runs": 100, "max_seconds": 10.0, "round_runs": 0}
    cmd = m.SetupCmd(spec=RuntimeSpec(model="bench_tiny", backend="onnxruntime", form="int8", threads=2,
                                      artifact="/a.onnx", input_shape=[1, 3, 32, 32]),
                     warmup=m.WarmupConfig(**wu), artifact_b="/b.onnx")
    wire = cmd.to_wire()
    assert set(wire) == {"cmd", "spec"} and wire["cmd"] == "setup"
    assert wire["spec"]["warmup"] == wu and wire["spec"]["artifact_b"] == "/b.onnx"
    assert wire["spec"]["variant"] == "int8" and wire["spec"]["threads"] == 2 and "form" not in wire["spec"]
    back = m.parse_command(wire)
    assert isinstance(back, m.SetupCmd) and back.spec.form == "int8" and back.artifact_b == "/b.onnx"
    assert back.warmup.min_runs == 3 and back.spec.artifact == "/a.onnx"
    # a ready message as an older worker writes it (no compute_precision) is understood
    old = {"event": "ready", "load_ms": 1.0, "first_inference_ms": 2.0, "readback": {"x": 1}, "device": "cpu",
           "timing": "t", "input_shape": [1, 3, 32, 32], "notes": [], "rewrites": None, "pid": 7,
           "warmup": {"runs": 9, "settled": True, "seconds": 0.1, "window_medians_ms": [1.0]}}
    r = m.parse_reply(old)
    assert isinstance(r, m.Ready) and r.warmup.runs == 9 and r.compute_precision is None and r.pid == 7
    bad = m.parse_reply({"event": "samples"})   # a malformed line is a failure naming it, not a crash
    assert isinstance(bad, m.Failed) and "samples" in bad.error


def test_request_plans_jobs_once_and_travels_as_json(tmp_path):
    """One BenchRequest from the same inputs the CLI takes; its jobs survive the JSON a cluster node receives."""
    from hvit_deploy.bench.request import BenchRequest, build_request
    from hvit_deploy.errors import HvitError

    req = build_request(profile=str(Path(__file__).parent / "data" / "bench_fast.yaml"),
                        models=["bench_tiny"], plugins=[str(Path(__file__).parent / "bench_models.py")],
                        backends=["ort", "torch"], forms=["rewritten", "original"], threads=1, out=tmp_path / "r.json")
    assert req.backends == ["onnxruntime", "torch"] and req.forms == ["rewritten", "original"]
    assert [tuple(j) for j in req.jobs()] == [("bench_tiny", f, b, 1) for f in ("rewritten", "original")
                                              for b in ("onnxruntime", "torch")]
    again = BenchRequest.model_validate_json(req.model_dump_json())
    assert again.jobs() == req.jobs() and again.profile.settings() == req.profile.settings()
    with pytest.raises(HvitError, match="--no-rewrite and --variants contradict"):
        build_request(models=["bench_tiny"], forms=["rewritten"], no_rewrite=True)
