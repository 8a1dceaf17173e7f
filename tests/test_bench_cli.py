"""``hvit-bench`` end to end on a tiny registered model (tests/bench_models.py): worker processes, results file,
skipped GPU backends, a crashing entry, Ctrl-C, and one-line errors for bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hvit_deploy.cli.bench import main

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = str(Path(__file__).parent / "bench_models.py")
FAST = ["--plugin", PLUGIN, "--profile", str(Path(__file__).parent / "data" / "bench_fast.yaml"), "--no-progress"]
STAT_FIELDS = ("mean_ms", "median_ms", "std_ms", "min_ms", "max_ms", "p90_ms", "p99_ms", "median_ci_ms",
               "first_inference_ms", "load_ms", "samples_ms", "warmup", "iterations", "threads")


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hvit-cache")
    old = os.environ.get("HVIT_CACHE_DIR")
    os.environ["HVIT_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("HVIT_CACHE_DIR", None)
    else:
        os.environ["HVIT_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("run") / "results.json"
    plot = out.with_suffix(".png")
    code = main(["--models", "bench_tiny", "--backends", "torch", "onnxruntime", "openvino", "torch-cuda",
                 "onnxruntime-cuda", "openvino-gpu", "coreml", "--variants", "original", "--iters", "45",
                 "--rounds", "3", "--op-profile", "--out", str(out), "--plot", str(plot), *FAST])
    return code, json.loads(out.read_text()), plot


def test_results_file(full_run):
    code, doc, plot = full_run
    assert code == 0
    assert doc["schema"] == "hvit-bench/1" and doc["status"] == "complete"
    env = doc["environment"]
    for key in ("cpu", "memory_gb", "os", "python", "versions", "threads"):
        assert key in env
    assert env["cpu"]["logical_cores"] >= 1 and env["cpu"]["model"]
    assert {"torch", "onnxruntime", "openvino", "coremltools", "hvit-deploy"} <= set(env["versions"])
    assert env["threads"]["worker_env"]["OMP_NUM_THREADS"] == "1"
    ok = {e["backend"]: e for e in doc["results"] if e["status"] == "ok"}
    # the CPU runtimes always run; a GPU runtime runs exactly where the registry's probe says it can
    from hvit_deploy.runtimes import get_runtime

    expected = {"torch", "onnxruntime", "openvino"} | {
        b for b in ("torch-cuda", "onnxruntime-cuda", "openvino-gpu") if get_runtime(b).availability() is None}
    assert set(ok) == expected
    for b, e in ok.items():
        for f in STAT_FIELDS:
            assert f in e, (b, f)
        s = np.asarray(e["samples_ms"])
        assert e["iterations"] == s.size == 45 and len(e["round_medians_ms"]) == 3
        assert e["median_ms"] == np.median(s)
        assert e["min_ms"] == s.min() and e["max_ms"] == s.max()
        assert e["median_ci_ms"][0] <= e["median_ms"] <= e["median_ci_ms"][1]
        assert e["warmup"] >= 4 and e["load_ms"] > 0 and e["first_inference_ms"] > 0
        assert e["timing"] and e["input_shape"] == [1, 3, 64, 64]
        # what the file holds and what the session computed in, recorded apart (OpenVINO: its hint, read back)
        assert e["artifact_precision"] == "fp32" and e["compute_precision"] == "fp32" and "precision" not in e
        assert e["process_runs"] and doc["schema_version"] == 3 and e["batch_size"] == 1
    assert ok["torch"]["threads_readback"]["intra_op_threads"] == 1
    assert ok["onnxruntime"]["threads_readback"]["intra_op_threads"] == 1
    assert ok["onnxruntime"]["threads_readback"]["execution_mode"] == "ORT_SEQUENTIAL"
    assert ok["openvino"]["threads_readback"]["INFERENCE_NUM_THREADS"] == 1
    assert ok["openvino"]["threads_readback"]["NUM_STREAMS"] == 1
    for b in ("onnxruntime", "openvino"):
        assert ok[b]["artifact"]["path"].startswith(os.environ["HVIT_CACHE_DIR"])
        assert ok[b]["speedup_vs_torch"]["reference"] == "torch/original"
        lo, hi = ok[b]["speedup_vs_torch"]["ci"]
        assert lo <= ok[b]["speedup_vs_torch"]["speedup"] <= hi
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_gpu_and_coreml_skip_cleanly(full_run):
    _, doc, _ = full_run
    skipped = {e["backend"]: e["reason"] for e in doc["results"] if e["status"] == "skipped"}
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        assert "CUDA" in skipped["torch-cuda"]
    if "onnxruntime-cuda" in skipped:
        assert "onnxruntime-gpu" in skipped["onnxruntime-cuda"] or "CUDA" in skipped["onnxruntime-cuda"]
    if sys.platform != "darwin":
        assert skipped["coreml"].startswith("Core ML runs on macOS only")
    assert "openvino-gpu" not in skipped or "GPU" in skipped["openvino-gpu"]


def test_op_profile_lists_operators(full_run):
    _, doc, _ = full_run
    ok = {e["backend"]: e for e in doc["results"] if e["status"] == "ok"}
    ort_ops = {o["op"] for o in ok["onnxruntime"]["op_profile"]}
    assert {"Conv", "Softmax"} & ort_ops
    ov_ops = ok["openvino"]["op_profile"]
    assert ov_ops and abs(sum(o["share"] for o in ov_ops) - 1) < 0.05
    assert any(o["op"].startswith("aten::") for o in ok["torch"]["op_profile"])


def test_crash_is_recorded_and_others_finish(tmp_path, full_run, capsys):
    out = tmp_path / "r.json"
    code = main(["--models", "bench_crash", "bench_tiny", "--backends", "torch", "onnxruntime", "--variants",
                 "original", "--iters", "10", "--rounds", "1", "--out", str(out), "--format", "csv", *FAST])
    assert code == 1
    doc = json.loads(out.read_text())
    by = {(e["model"], e["backend"]): e for e in doc["results"]}
    assert by[("bench_crash", "torch")]["status"] == "error"
    assert "worker crashed (SIGABRT)" in by[("bench_crash", "torch")]["error"]
    assert by[("bench_crash", "onnxruntime")]["error"].startswith("export to onnx failed")
    assert by[("bench_tiny", "torch")]["status"] == "ok" and by[("bench_tiny", "onnxruntime")]["status"] == "ok"
    assert by[("bench_tiny", "onnxruntime")]["artifact"]["cached"] is True  # exported by the first run
    csv_text = capsys.readouterr().out
    assert csv_text.splitlines()[0].startswith("model,backend,variant,status,threads")


def test_ctrl_c_keeps_completed_measurements(tmp_path, full_run):
    """SIGINT once both entries have completed a round: exit 130, and every completed round kept. Rounds of 20
    runs (20,000 runs in 1,000 rounds: far more than the test waits for) so that the first one completes within a
    poll or two whatever the machine's speed; what is checked is counts, not time."""
    out = tmp_path / "r.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    per_round, rounds = 20, 1000
    proc = subprocess.Popen(
        [sys.executable, "-m", "hvit_deploy.cli.bench", "--models", "bench_tiny", "--backends", "onnxruntime",
         "openvino", "--variants", "original", "--iters", str(per_round * rounds), "--rounds", str(rounds),
         "--out", str(out), *FAST],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    guard = time.time() + 600  # only so that a hung run cannot hang the suite; nothing is asserted on time
    seen = {}
    while time.time() < guard and proc.poll() is None:
        time.sleep(0.2)
        try:
            doc = json.loads(out.read_text())
        except (OSError, ValueError):
            continue
        seen = {e["backend"]: e.get("rounds_done") or 0 for e in doc["results"] if e["status"] == "incomplete"}
        if len(seen) == 2 and min(seen.values()) >= 1:
            break
    assert len(seen) == 2 and min(seen.values()) >= 1 and proc.poll() is None, (
        proc.stderr.read().decode()[-2000:] if proc.poll() is not None else f"no round: {seen}")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    doc = json.loads(out.read_text())
    assert doc["status"] == "interrupted"
    assert {e["backend"] for e in doc["results"]} == {"onnxruntime", "openvino"}
    for e in doc["results"]:
        done = e["rounds_done"]
        assert seen[e["backend"]] <= done < rounds  # what was on disk before Ctrl-C is kept, and it stopped early
        assert e["status"] == "interrupted" and e["reason"] == f"interrupted after {done} of {rounds} rounds"
        # whole rounds only: every sample of every completed round, and the statistics computed from them
        assert e["iterations"] == len(e["samples_ms"]) == done * per_round
        assert len(e["round_medians_ms"]) == done and e["median_ms"] == np.median(e["samples_ms"])
    # no worker left behind
    assert not [p for p in _children(proc.pid)]


def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("argv, message", [
    (["--models", "efficientmod_xxx"], "unknown model 'efficientmod_xxx'"),
    (["--models", "twins_pcvpt_s"], "did you mean twins_pcpvt_s"),
    (["--backends", "onnxruntme"], "unknown backend 'onnxruntme'; did you mean onnxruntime"),
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--threads", "0"], "threads: Input should be greater than or equal to 1"),
    (["--out", "/proc/hvit/results.json"], "cannot create output directory /proc/hvit"),
    (["--plot", "x.jpg"], "the plot is a PNG"),
])
def test_bad_input_is_one_line_exit_two(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--models", "twins_svt_s", *argv] if "--models" not in argv else argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not list(tmp_path.glob("results-*.json"))


def test_bad_profile_yaml_points_at_the_spot(tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text("threads: 2\nwarmup:\n  min_runs: [\n")
    assert main(["--profile", str(bad), "--models", "twins_svt_s"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{bad}:4:1: invalid YAML" in err and "\n" not in err
    bad.write_text("threads: 2\nwarmup:\n  min_run: 3\n")
    assert main(["--profile", str(bad), "--models", "twins_svt_s"]) == 2
    assert "warmup.min_run: Extra inputs are not permitted" in capsys.readouterr().err


def test_rewritten_and_original_side_by_side(tmp_path):
    """Both forms in one run, each its own entry, with the rewrite's effect as a ratio (torch eager, the Twins
    recipe's rewrites)."""
    out = tmp_path / "r.json"
    code = main(["--models", "twins_pcpvt_s", "--backends", "torch", "--variants", "rewritten", "original",
                 "--iters", "6", "--rounds", "2", "--input-size", "64", "--out", str(out), *FAST])
    assert code == 0
    doc = json.loads(out.read_text())
    by = {e["variant"]: e for e in doc["results"]}
    from hvit_deploy.recipes import load_recipe

    assert by["rewritten"]["rewrites"] == load_recipe("twins").rewrites_for("onnx", "twins_pcpvt_s")
    assert "explicit_attention" in by["rewritten"]["rewrites"] and by["original"]["rewrites"] == []
    s = by["rewritten"]["speedup_vs_original"]
    assert s["reference"] == "torch/original" and s["speedup"] == pytest.approx(
        by["original"]["median_ms"] / by["rewritten"]["median_ms"], rel=1e-3)


@pytest.mark.gpu
def test_torch_cuda_times_on_the_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = tmp_path / "r.json"
    assert main(["--models", "bench_tiny", "--backends", "torch-cuda", "--variants", "original", "--iters", "30",
                 "--rounds", "1", "--out", str(out), *FAST]) == 0
    e = json.loads(out.read_text())["results"][0]
    assert e["status"] == "ok" and e["device"].startswith("cuda") and "synchronize" in e["timing"]


def test_side_by_side_against_another_checkout(tmp_path, full_run):
    """--against: a second checkout (here a copy of this one) timed in the same rounds; both results files carry
    the same pairing id and compare pairs their rounds."""
    import shutil

    copy = tmp_path / "base"
    for name in ("hvit_deploy", "export_recipes", "profiles"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "head.json"
    code = main(["--models", "bench_tiny", "--backends", "onnxruntime", "--variants", "original", "--iters", "60",
                 "--rounds", "6", "--against", str(copy), "--out", str(out), *FAST])
    assert code == 0
    head = json.loads(out.read_text())
    base = json.loads((tmp_path / "head-base.json").read_text())
    assert head["pairing"]["run"] == base["pairing"]["run"]
    assert (head["pairing"]["side"], base["pairing"]["side"]) == ("head", "base")
    assert base["pairing"]["root"] == str(copy.resolve())
    for doc in (head, base):
        e = doc["results"][0]
        assert e["status"] == "ok" and len(e["round_medians_ms"]) == 6 and e["iterations"] == 60
    from hvit_deploy.bench.compare import compare_docs

    cmp = compare_docs(base, head)
    assert cmp.paired and "paired by round" in cmp.rows[0].notes[0]
    # 6 rounds cannot reach p < 0.01 with a signed-rank test: the comparison says so instead of deciding
    assert cmp.rows[0].verdict == "unchanged" and any("too few rounds" in n for n in cmp.rows[0].notes)


def test_paired_in_one_process_against_another_checkout(tmp_path):
    """--pair-block: base and head artifacts are timed in ONE worker process, in alternating blocks, each block a
    pair for compare; a runtime whose code differs between the checkouts falls back to one process per side."""
    import shutil

    copy = tmp_path / "base"
    for name in ("hvit_deploy", "export_recipes", "profiles"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "hvit_deploy" / "runtimes" / "openvino_cpu.py", "a") as f:
        f.write("# the base checkout's OpenVINO runtime differs\n")
    out = tmp_path / "head.json"
    code = main(["--models", "bench_tiny", "--backends", "onnxruntime", "openvino", "--variants", "original",
                 "--iters", "40", "--rounds", "4", "--processes", "2", "--pair-block", "5", "--against", str(copy),
                 "--out", str(out), *FAST])
    assert code == 0
    head = json.loads(out.read_text())
    base = json.loads((tmp_path / "head-base.json").read_text())
    h = {e["backend"]: e for e in head["results"]}
    b = {e["backend"]: e for e in base["results"]}
    for doc in (h, b):
        e = doc["onnxruntime"]
        assert e["status"] == "ok" and e["pairing_mode"]["design"] == "in-process ABBA"
        assert e["iterations"] == 40 and len(e["round_medians_ms"]) == 8  # 4 rounds x 2 blocks of 5 per side
        assert sorted(set(e["round_process"])) == [0, 1]
    # one worker process timed both sides
    assert [r["pid"] for r in h["onnxruntime"]["process_runs"]] == [r["pid"] for r in b["onnxruntime"]["process_runs"]]
    # the OpenVINO runtime's code differs: separate processes, said in the entry
    assert "pairing_mode" not in h["openvino"] and any("separate processes" in n for n in h["openvino"]["notes"])
    from hvit_deploy.bench.compare import compare_docs

    cmp = compare_docs(base, head, threshold=0.02)
    row = next(r for r in cmp.rows if r.backend == "onnxruntime")
    assert cmp.paired and row.verdict in ("unchanged", "regression", "improvement") and row.detectable > 0


@pytest.mark.parametrize("argv, message", [
    (["--against", "/nonexistent"], "not the root of an hvit-deploy checkout"),
    (["--against", str(ROOT), "--rounds", "2"], "is this checkout"),
    (["--against-out", "x.json"], "--against-out needs --against"),
])
def test_against_input_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--models", "twins_svt_s", *argv]) == 2
    assert message in capsys.readouterr().err
