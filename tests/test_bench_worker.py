"""The timing loop and warm-up of the worker, on plain Python callables (no runtime needed); the typed messages
and the bench request."""
from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

import hvit_deploy

from hvit_deploy.bench.worker import timed_runs, warm_up


class FakeClock:
    """Integer nanoseconds that move only when a fake call (or the test) moves them: no wall-clock involved."""

    def __init__(self):
        self.now = 0
        self.calls = 0

    def __call__(self) -> int:
        return self.now

    def taking(self, ns_of_call):
        """A call whose k-th invocation (0-based) takes ``ns_of_call(k)`` nanoseconds of fake time."""
        def call():
            self.now += ns_of_call(self.calls)
            self.calls += 1
        return call


def test_timed_runs_measures_only_the_call():
    clock = FakeClock()
    durations = [3_000_000, 1_000_000, 7, 2_500_000, 1_000_000]
    reported = []

    def progress(i):  # time spent reporting must not land in any sample
        reported.append(i)
        clock.now += 10**9

    ns = timed_runs(clock.taking(lambda k: durations[k]), 5, progress=progress, interval_ns=0, clock=clock)
    assert ns == durations  # exactly the calls' own time, each in its own slot
    assert reported == [1, 2, 3, 4, 5]  # progress reported between calls, outside the timed region


def test_timed_runs_reports_progress_once_per_interval_and_turns_gc_off():
    clock = FakeClock()
    gc_during = []

    def call():
        gc_during.append(gc.isenabled())
        clock.now += 1_000_000

    reported = []
    ns = timed_runs(call, 7, progress=reported.append, interval_ns=2_500_000, clock=clock)
    assert ns == [1_000_000] * 7
    assert reported == [3, 6]  # after the first call past each 2.5 ms interval, not after every call
    assert gc_during == [False] * 7 and gc.isenabled()  # the collector is off while timing, back on after
    assert timed_runs(call, 0, clock=clock) == []
    real = timed_runs(lambda: None, 3)  # the default clock: perf_counter_ns (no figure asserted)
    assert len(real) == 3 and all(isinstance(v, int) and v >= 0 for v in real)


def test_warm_up_stops_when_settled():
    clock = FakeClock()
    cfg = {"min_runs": 3, "window": 4, "tolerance": 0.5, "max_runs": 100, "max_seconds": 10}
    seen = []
    wu = warm_up(clock.taking(lambda k: 1_000_000), cfg, progress=seen.append, clock=clock)
    assert wu.settled and wu.runs == 3 + 2 * 4  # two windows are needed to compare medians
    assert wu.window_medians_ms == [1.0, 1.0] and wu.seconds == 0.011 and wu.not_settled_because is None
    assert seen == [3, 7, 11] and clock.calls == 11

    # a window slower than the one before is a busy machine, not warm-up: it settles too
    clock = FakeClock()
    wu = warm_up(clock.taking(lambda k: 1_000_000 if k < 7 else 5_000_000), cfg, clock=clock)
    assert wu.settled and wu.runs == 11 and wu.window_medians_ms == [1.0, 5.0]


def _faster_each_window(min_runs, window, first_ms):
    """Each window twice as fast as the one before: never settles for a tolerance below 0.5."""
    return lambda k: 1_000_000 if k < min_runs else int(first_ms * 1e6) >> ((k - min_runs) // window)


def test_warm_up_capped_by_max_runs():
    clock = FakeClock()
    cfg = {"min_runs": 1, "window": 4, "tolerance": 0.05, "max_runs": 25, "max_seconds": 10}
    wu = warm_up(clock.taking(_faster_each_window(1, 4, 64)), cfg, clock=clock)
    assert not wu.settled and wu.runs == 25 == clock.calls  # 1 + 6 windows of 4; a 7th would pass 25
    assert wu.not_settled_because == "max_runs (25) reached"
    assert wu.window_medians_ms == [64.0, 32.0, 16.0, 8.0, 4.0, 2.0]
    # min_runs above max_runs: only max_runs are run
    clock = FakeClock()
    wu = warm_up(clock.taking(lambda k: 1000), {**cfg, "min_runs": 50, "max_runs": 6}, clock=clock)
    assert wu.runs == 6 == clock.calls and not wu.settled and wu.window_medians_ms == []


def test_warm_up_capped_by_max_seconds():
    clock = FakeClock()
    cfg = {"min_runs": 1, "window": 4, "tolerance": 0.05, "max_runs": 1000, "max_seconds": 0.5}
    wu = warm_up(clock.taking(_faster_each_window(1, 4, 100)), cfg, clock=clock)
    # 1 ms, then windows of 4 x 100 ms (0.401 s: under the limit) and 4 x 50 ms (0.601 s: over it)
    assert not wu.settled and wu.runs == 9 and wu.seconds == 0.601
    assert wu.not_settled_because == "max_seconds (0.5) reached"


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


def test_a_plugin_file_named_two_ways_is_loaded_once(monkeypatch, tmp_path):
    """The artifact cache key covers the --plugin files: the same file given relative and absolute counts once
    (it was loaded and listed twice, so the coordinator's key differed from its export process's)."""
    from hvit_deploy.bench import plugins

    f = tmp_path / "my_plugin.py"
    f.write_text("RUNS = globals().get('RUNS', 0) + 1\nimport sys\nsys.modules.setdefault('_plugin_runs', [])\n"
                 "sys.modules['_plugin_runs'].append(1)\n")
    monkeypatch.setattr(plugins, "loaded_files", [])
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.chdir(tmp_path)
    import sys

    sys.modules.pop("_plugin_runs", None)
    plugins.load([str(f), "my_plugin.py", str(f)])
    assert plugins.loaded_files == [str(f.resolve())] and len(sys.modules.pop("_plugin_runs")) == 1


def test_a_worker_leaves_after_its_atexit_handlers_and_flushes(tmp_path):
    """A worker told to quit ends without the interpreter's teardown (:func:`.worker.leave`) but still runs its
    atexit handlers (coverage saves its data in one) and flushes stdout, exit code 0. A real worker process, with a
    plugin that registers such a handler and leaves unflushed output."""
    from hvit_deploy.bench import messages as m
    from hvit_deploy.bench.process import Worker, worker_env

    marker = tmp_path / "atexit-ran"
    plugin = tmp_path / "exit_plugin.py"
    plugin.write_text("import atexit, sys\n"
                      f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
                      "sys.stdout = open(sys.stdout.fileno(), 'w', buffering=1 << 16, closefd=False)\n"
                      "sys.stdout.write('unflushed line from the plugin')\n")
    w = Worker(worker_env(1, [str(plugin)]), "exit", tmp_path)
    try:
        assert isinstance(w.request(m.HelloCmd(), timeout=300), m.Hello)
        w.send({"cmd": "quit"})
        assert w.proc.wait(timeout=120) == 0
    finally:
        w.kill()
    assert marker.read_text() == "yes"
    assert "unflushed line from the plugin" in w.log_path.read_text()


def test_workers_load_the_model_families_on_first_use():
    """Workers start with HVIT_DEFER_FAMILIES: importing the package skips the family files, timm and torch (a
    worker timing ONNX Runtime or OpenVINO never needs them); the first registry read loads them all, timm's
    registration included, and create_model / rewrite are there on first use."""
    import subprocess

    from hvit_deploy.bench.process import worker_env

    env = worker_env(1)
    assert env["HVIT_DEFER_FAMILIES"] == "1"
    code = ("import sys; import hvit_deploy.bench.worker; print('timm' in sys.modules, 'torch' in sys.modules, "
            "'hvit_deploy.models.smt' in sys.modules); import hvit_deploy; print('smt_t' in hvit_deploy.list_models(), "
            "len(hvit_deploy.list_models())); import timm; print(timm.is_model('smt_t')); "
            "from hvit_deploy import create_model, rewrite; m = rewrite(create_model('efficientmod_xxs'), 'onnx'); "
            "print(type(m).__name__, hvit_deploy.create_model is create_model)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    shipped = [n for n in hvit_deploy.list_models()    # a plugin test earlier in this process may have added one
               if hvit_deploy.get_spec(n).builder.__module__.startswith("hvit_deploy.models.")]
    assert out.stdout.split("\n")[:4] == ["False False False", f"True {len(shipped)}", "True", "EfficientMod True"]


def test_the_exports_progress_lines_are_relayed_and_keep_a_busy_worker_alive(tmp_path):
    """A worker that logs ``hvit-export: ...`` lines (an INT8 fallback's tries, minutes apiece) is relayed line by
    line, and each line restarts the silence timeout: here the worker is silent on its channel for longer than the
    timeout (two 7 s pauses, timeout 10 s) but says what it does in between, so it is not stopped as stalled. Other
    output and a line still being written are not relayed."""
    from hvit_deploy.bench import messages as m
    from hvit_deploy.bench.process import Worker, worker_env

    plugin = tmp_path / "busy_plugin.py"
    plugin.write_text("import sys, time\n"
                      "print('some converter chatter', file=sys.stderr, flush=True)\n"
                      "print('hvit-export: tiny -> litert int8: fallback try 1 ...', file=sys.stderr, flush=True)\n"
                      "time.sleep(7)\n"
                      "print('hvit-export: tiny -> litert int8: fallback try 2 ...', file=sys.stderr, flush=True)\n"
                      "time.sleep(7)\n"
                      "sys.stderr.write('hvit-export: half a line'); sys.stderr.flush()\n")
    w = Worker(worker_env(1, [str(plugin)]), "busy", tmp_path)
    notes = []
    try:
        assert isinstance(w.request(m.HelloCmd(), timeout=10, on_note=notes.append), m.Hello)
    finally:
        w.kill()
    assert notes == ["hvit-export: tiny -> litert int8: fallback try 1 ...",
                     "hvit-export: tiny -> litert int8: fallback try 2 ..."]
    assert w.notes() == []   # read once; the unfinished line is not a note
    with open(w.log_path, "ab") as f:
        f.write(b" now done\nhvit-export: next\nchatter\n")
    assert w.notes() == ["hvit-export: half a line now done", "hvit-export: next"]
