"""The side-by-side benchmark scripts still run end to end (one short round), so they do not rot between the
times someone needs their figures. Their timings are not asserted: speed lives in the benchmarks themselves."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, args", [
    ("efficientmod_forms.py", ["--model", "efficientmod_xxs", "--forms", "repeat", "broadcast",
                               "--rounds", "1", "--iters", "1", "--warmup", "1"]),
    ("acmix_shift.py", ["--case", "module", "--rounds", "1", "--iters", "1", "--warmup", "1", "--threads", "1"]),
])
def test_forms_benchmark_runs_and_forms_agree(script, args):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("fastest:") >= 2  # one table per backend (ONNX Runtime, OpenVINO)
    diffs = [float(d) for d in re.findall(r"max\|diff\| vs eager (\S+)", r.stdout)]
    assert diffs and max(diffs) < 1e-5


def test_int8_vs_fp32_prints_its_table(tmp_path):
    """One model, one thread count, a few runs: the table prints with both runtimes, the latency and size ratios,
    the gate figures and the layers kept in FP, and says its calibration images were made from the photos."""
    import os

    from test_bench_int8 import fitted_tiny

    env = dict(os.environ, HVIT_CACHE_DIR=str(tmp_path / "cache"))
    ckpt = fitted_tiny(tmp_path)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "int8_vs_fp32.py"), "--models", "bench_tiny",
                        "--plugin", str(ROOT / "tests" / "bench_models.py"),
                        "--profile", str(ROOT / "tests" / "data" / "bench_fast.yaml"), "--threads", "1",
                        "--iters", "6", "--rounds", "2", "--processes", "1", "--synthetic-images", "16",
                        "--checkpoint", str(ckpt), "--out-dir", str(tmp_path / "out"), "--json"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model,backend,variant" not in r.stdout   # hvit-bench's own table goes to stderr
    assert "| model " in r.stdout and "fp32/int8 (95% CI)" in r.stdout and "top-1 agr" in r.stdout
    assert "made from the two shipped photos" in r.stdout
    rows = json.loads(r.stdout[r.stdout.index("\n[") + 1:])
    assert sorted(x["runtime"] for x in rows) == ["onnxruntime", "openvino"]
    for x in rows:
        assert x["model"] == "bench_tiny" and x["threads"] == 1 and x["rounds"] == 2 and x["processes"] == 1
        ratio = float(x["fp32/int8 (95% CI)"].split()[0])
        assert ratio > 0 and float(x["fp32 ms"]) > 0 and float(x["int8 ms"]) > 0
        assert 0 < float(x["size ratio"]) < 1 and float(x["cosine"]) >= 0.99
        gate_top1, strict = x["top-1 agr (strict)"].split()   # the gate's figure, the strict one in brackets
        assert float(gate_top1) >= 0.99 and float(strict.strip("()")) <= float(gate_top1)
    assert (tmp_path / "out" / "results-t1.json").is_file()
    assert len(list((tmp_path / "out" / "calibration").glob("*.png"))) == 16


def test_op_shares_prints_shares_for_both_runtimes(tmp_path):
    """ONNX Runtime's profiler and OpenVINO's counters on one small model: shares by op type and role sum to 1."""
    import openvino as ov

    from test_int8 import _tiny_onnx

    _, onnx_path = _tiny_onnx(tmp_path)
    xml = tmp_path / "tiny.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "op_shares.py"), str(onnx_path), str(xml),
                        "--runs", "2", "--nodes", "2", "--roles", "mlp=mlp"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    blocks = r.stdout.split("kernel shares")[1:]
    assert len(blocks) == 2 and "MatMul" in blocks[0] and "shares only" in r.stdout
    for b in blocks:
        roles = re.findall(r"(\w+) (\d+\.\d)%", b.split("by role:")[1])
        assert {n for n, _ in roles} == {"mlp", "other"} and abs(sum(float(s) for _, s in roles) - 100) < 0.5
