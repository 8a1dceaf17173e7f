"""The side-by-side benchmark scripts still run end to end (one short round), so they do not rot between the
times someone needs their figures. Their timings are not asserted: speed lives in the benchmarks themselves.
benchmarks/int8_vs_fp32.py is run in tests/test_bench_int8.py, where it reuses that file's INT8 exports."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_exact_arithmetic_is_openvinos_fake_quantize_in_float_ops():
    """benchmarks/openvino_int8_patterns.py --exact: each FakeQuantize rewritten as float ops gives OpenVINO's own
    FakeQuantize values (activations, per-tensor, and weights, per output channel), and none is left to become an
    int8 kernel."""
    import importlib.util

    import openvino as ov
    import openvino.opset13 as ops

    spec = importlib.util.spec_from_file_location("ovpat", ROOT / "benchmarks" / "openvino_int8_patterns.py")
    ovpat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ovpat)

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    x = (rng.standard_normal((3, 6)) * 2).astype(np.float32)
    lo, hi = np.float32(-1.5), np.float32(2.5)                 # values beyond the range clip to it
    wl, wh = -np.abs(w).max(1, keepdims=True), np.abs(w).max(1, keepdims=True)

    def build():
        p = ops.parameter([3, 6], np.float32)
        a = ops.fake_quantize(p, lo, hi, lo, hi, 256)
        b = ops.fake_quantize(ops.constant(w), wl, wh, wl, wh, 255)
        return ov.Model([ops.fake_quantize(p, lo, hi, lo, hi, 256), ops.matmul(a, b, False, True)], [p])

    def fq(v, low, high, levels):                               # the FakeQuantize definition, in numpy
        return np.round(np.clip((v - low) / (high - low), 0, 1) * (levels - 1)) / (levels - 1) * (high - low) + low

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    own = core.compile_model(build(), "CPU", cfg)(x)
    model = build()
    assert ovpat.exact_arithmetic(model) == 3
    assert not [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    got = core.compile_model(model, "CPU", cfg)(x)
    xa = fq(x, lo, hi, 256)
    assert np.abs(xa - x).max() > 0.01                          # the rounding is there
    np.testing.assert_allclose(got[0], own[0], atol=1e-6)       # the activations: OpenVINO's own FakeQuantize
    np.testing.assert_allclose(got[0], xa, atol=1e-6)
    np.testing.assert_allclose(got[1], xa @ fq(w, wl, wh, 255).T, rtol=1e-5, atol=1e-5)
