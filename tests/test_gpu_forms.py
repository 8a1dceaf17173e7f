"""The fastest GPU forms (CUDA graphs in FP16/BF16, torch.compile), torch.compile's CPU figure, the H200 results
on record and the device script's dry run. GPU tests skip cleanly without CUDA; the CPU torch.compile run is
``slow`` (inductor's C++ compile of even the tiny model takes 20-70 s on two cores)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hvit_deploy.recipes import load_recipe
from hvit_deploy.runtimes import Unavailable, canonical_runtime, get_runtime, gpu_runtimes, open_runtime
from hvit_deploy.runtimes.torch_compile import check_compiled, compile_mode
from hvit_deploy.runtimes.torch_cuda_graphs_fp16 import check_low_precision, tie_tolerance

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = ROOT / "benchmarks" / "results" / "gpu-h200"
FAST = ["--plugin", str(HERE / "bench_models.py"), "--profile", str(HERE / "data" / "bench_fast.yaml"), "--no-progress"]
CUDA = torch.cuda.is_available()
GRAPH_FORMS = {"torch-cuda-graphs": "fp32", "torch-cuda-graphs-fp16": "fp16", "torch-cuda-graphs-bf16": "bf16"}


# ------------------------------------------------------------------------------------------------ the registry

def test_new_gpu_forms_are_runtimes_of_their_own():
    for name, precision in GRAPH_FORMS.items():
        rt = get_runtime(name)
        assert rt.device_kind == "gpu" and rt.format is None and rt.needs_probe
        assert rt.compute_precision == precision
    assert {"torch-cuda-graphs-fp16", "torch-cuda-graphs-bf16", "torch-compile-cuda"} <= set(gpu_runtimes())
    assert get_runtime("torch-compile").device_kind == "cpu" and get_runtime("torch-compile").format is None
    assert canonical_runtime("compile") == "torch-compile" and canonical_runtime("cuda_graphs_bf16") == \
        "torch-cuda-graphs-bf16" and canonical_runtime("compile-cuda") == "torch-compile-cuda"


@pytest.mark.skipif(CUDA, reason="checks the no-CUDA path")
@pytest.mark.parametrize("name", ["torch-cuda-graphs-fp16", "torch-cuda-graphs-bf16", "torch-compile-cuda"])
def test_gpu_forms_are_unavailable_without_cuda(name):
    assert "CUDA" in get_runtime(name).availability()
    with pytest.raises(Unavailable, match="CUDA"):
        open_runtime(name, {"model": "efficientmod_xxs", "threads": 1})


# ------------------------------------------------------------------------- the checks before timing (CPU, real)

@pytest.fixture(scope="module")
def xxs_logits():
    """EfficientMod-xxs (random weights, seed 0) on one image in FP32 and cast to BF16 and FP16 on the CPU."""
    from hvit_deploy import create_model

    torch.manual_seed(0)
    m = create_model("efficientmod_xxs").eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32))
    with torch.inference_mode():
        ref = m(x).numpy()
        out = {"fp32": ref}
        for p, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            try:
                out[p] = m.to(dt)(x.to(dt)).float().numpy()
            except RuntimeError as e:  # a CPU kernel missing in this precision
                out[p] = e
            m.float()
    return out


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_check_passes_a_real_cast(xxs_logits, precision):
    got = xxs_logits[precision]
    if isinstance(got, Exception):
        pytest.skip(f"no CPU kernels in {precision}: {got}")
    fig = check_low_precision(xxs_logits["fp32"], got, precision)
    assert fig["compute_precision"] == precision and fig["top1_agrees"] is True and fig["finite"] is True
    assert 0.999 <= fig["cosine_vs_fp32"] <= 1.0 + 1e-12
    assert fig["max_abs_vs_fp32"] == pytest.approx(float(np.abs(got - xxs_logits["fp32"]).max()), rel=1e-6)


def test_low_precision_check_fails_a_wrong_output(xxs_logits):
    ref = xxs_logits["fp32"]
    with pytest.raises(RuntimeError, match=r"BF16 output differs from FP32 eager: cosine .*top-1 differs"):
        check_low_precision(ref, -ref, "bf16")
    nan = ref.copy()
    nan[0, 3] = np.nan
    with pytest.raises(RuntimeError, match="non-finite"):
        check_low_precision(ref, nan, "fp16")


def test_top1_ties_within_one_rounding_step_agree():
    ref = np.array([[10.0, 9.999, 0.0, -3.0]], dtype=np.float32)
    assert tie_tolerance(ref, "bf16") == pytest.approx(10.0 / 128)
    swapped = np.array([[9.999, 10.0, 0.0, -3.0]], dtype=np.float32)  # top-1 flips by less than a BF16 step
    assert check_low_precision(ref, swapped, "bf16")["top1_agrees"] is True
    far = np.array([[10.0, 9.0, 0.0, -3.0]], dtype=np.float32), np.array([[9.0, 10.0, 0.0, -3.0]], dtype=np.float32)
    with pytest.raises(RuntimeError, match="top-1 differs"):
        check_low_precision(*far, "fp16")


def test_compiled_output_check(xxs_logits):
    ref = xxs_logits["fp32"]
    fig = check_compiled(ref, ref + 1e-6)
    assert fig["compile_max_abs_vs_eager"] == pytest.approx(1e-6, rel=0.1) and fig["compile_cosine_vs_eager"] > 0.99999
    with pytest.raises(RuntimeError, match=r"torch.compile output differs from eager: max \|diff\|"):
        check_compiled(ref, ref * 1.5)


def test_compile_mode_comes_from_spec_then_environment(monkeypatch):
    monkeypatch.delenv("HVIT_COMPILE_MODE", raising=False)
    assert compile_mode({}, "max-autotune") == "max-autotune"
    monkeypatch.setenv("HVIT_COMPILE_MODE", "reduce-overhead")
    assert compile_mode({}, "max-autotune") == "reduce-overhead"
    assert compile_mode({"compile_mode": "default"}, "max-autotune") == "default"
    with pytest.raises(ValueError, match="unknown torch.compile mode 'fast'"):
        compile_mode({"compile_mode": "fast"}, "default")


# ------------------------------------------------------------------------------ torch.compile's CPU figure (slow)

@pytest.mark.slow
def test_torch_compile_times_on_the_cpu(tmp_path):
    """hvit-bench --backends torch-compile: compiled before timing, compile time apart from load time, output
    checked against eager, then timed like every other entry."""
    from hvit_deploy.cli.bench import main

    out = tmp_path / "r.json"
    assert main(["--models", "bench_tiny", "--backends", "torch-compile", "--variants", "original", "--iters",
                 "20", "--rounds", "1", "--threads", "1", "--out", str(out), *FAST]) == 0
    e = json.loads(out.read_text())["results"][0]
    assert e["backend"] == "torch-compile" and e["status"] == "ok" and e["device"] == "cpu"
    rb = e["threads_readback"]
    assert rb["compile_mode"] == "default" and rb["compile_backend"] == "inductor" and rb["compile_s"] > 0
    assert rb["compile_max_abs_vs_eager"] < 1e-3 and rb["compile_cosine_vs_eager"] > 0.9999
    assert rb["graph_breaks"] == 0 and rb["intra_op_threads"] == 1
    assert e["load_ms"] > 0 and e["load_ms"] < rb["compile_s"] * 1e3  # compiling is not counted as loading
    assert e["median_ms"] > 0 and len(e["samples_ms"]) == 20 and "torch.compile" in e["timing"]


# ---------------------------------------------------------------------------------------- GPU (skip without CUDA)

@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_graph_forms_and_compile_time_on_the_gpu(tmp_path, monkeypatch):
    from hvit_deploy.cli.bench import main

    monkeypatch.setenv("HVIT_COMPILE_MODE", "reduce-overhead")  # workers inherit it; the short compile
    out = tmp_path / "r.json"
    assert main(["--models", "bench_tiny", "--backends", *GRAPH_FORMS, "torch-compile-cuda", "--variants",
                 "original", "--iters", "40", "--rounds", "1", "--out", str(out), *FAST]) == 0
    by = {e["backend"]: e for e in json.loads(out.read_text())["results"]}
    for name, precision in GRAPH_FORMS.items():
        assert by[name]["status"] == "ok" and by[name]["threads_readback"]["compute_precision"] == precision
    for name in ("torch-cuda-graphs-fp16", "torch-cuda-graphs-bf16"):
        rb = by[name]["threads_readback"]
        assert rb["cosine_vs_fp32"] >= 0.999 and rb["top1_agrees"] is True
    rb = by["torch-compile-cuda"]["threads_readback"]
    assert by["torch-compile-cuda"]["status"] == "ok" and rb["compile_mode"] == "reduce-overhead"
    assert rb["compile_s"] > 0 and rb["compile_cosine_vs_eager"] > 0.9999


# ------------------------------------------------------------------------------------- the H200 runs on record

def test_h200_results_on_record_load_and_hold_the_figures_in_the_docs():
    from hvit_deploy.bench.results import load_results

    a, b = (load_results(RESULTS / f"gpu-h200-{s}.json") for s in "ab")
    med = {(e.model, e.backend): e.median_ms for d in (a, b) for e in d.results if e.status == "ok"}
    assert a.environment["gpu"][0]["name"] == "NVIDIA H200" and a.environment["versions"]["torch"] == "2.11.0"
    families = {m for m, _ in med}
    assert {"efficientmod_s", "smt_t", "twins_pcpvt_s", "crossvit_9_dagger", "acmix_swin_t",
            "acmix_resnet26"} <= families
    assert all((m, f) in med for m in families for f in ("torch-cuda", "torch-cuda-graphs", "torch-cuda-fp16"))
    # ACmix-ResNet26 barely gains from graphs (memory-bound local attention); the transformers gain 3-4x
    assert med["acmix_resnet26", "torch-cuda-graphs"] == pytest.approx(3.82, abs=0.01)
    assert med["acmix_resnet26", "torch-cuda"] / med["acmix_resnet26", "torch-cuda-graphs"] < 1.2
    assert med["efficientmod_s", "torch-cuda"] / med["efficientmod_s", "torch-cuda-graphs"] > 4
    doc = (ROOT / "docs" / "gpu.md").read_text()
    for (m, f), v in med.items():
        if f == "torch-cuda-graphs" and m in families:
            assert f"{v:.2f}" in doc, (m, f, v)  # the docs' table quotes the files


# ----------------------------------------------------------------------------------- the device script's dry run

@pytest.mark.skipif(CUDA, reason="the dry run is the no-CUDA path")
def test_device_script_dry_runs_to_all_skipped(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "time_forms.py"), "--out",
                        str(tmp_path), "--models", "efficientmod_s", "smt_t"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    from hvit_deploy.bench.results import exit_code, load_results

    doc = load_results(tmp_path / "forms.json")
    assert exit_code(doc) == 0 and not (tmp_path / "compile.json").exists()  # one hvit-bench run in a dry run
    forms = {"torch-cuda", "torch-cuda-fp16", "torch-cuda-graphs", "torch-cuda-graphs-fp16",
             "torch-cuda-graphs-bf16", "torch-compile-cuda"}
    assert {(e.model, e.backend) for e in doc.results} == {(m, f) for m in ("efficientmod_s", "smt_t")
                                                                    for f in forms}
    assert all(e.status == "skipped" and "CUDA" in e.reason for e in doc.results)
    sweep = load_results(tmp_path / "sweep.json")  # the batch sweep: one model, its best form, batch 1 to 64
    assert exit_code(sweep) == 0 and sweep.settings["batch"] == [1, 2, 4, 8, 16, 32, 64]
    assert [(e.model, e.backend, e.batch) for e in sweep.results] == [
        ("efficientmod_s", "torch-cuda-graphs-fp16", b) for b in (1, 2, 4, 8, 16, 32, 64)]
    assert all(e.status == "skipped" and "CUDA" in e.reason for e in sweep.results)
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("skipped") == 12 + 7 and "| torch-compile-cuda |" in summary
    assert "| efficientmod_s | torch-cuda-graphs-fp16 | 64 |  |  | skipped |" in summary


# ------------------------------------------------------------- ACmix-ResNet's unfold on the GPU (issue 20, item 4)

def test_torch_runtimes_can_take_the_openvino_recipe_form_of_acmix_resnet(monkeypatch):
    """Both recipes' ACmix-ResNet form attends by matmuls over query tiles (``acmix.halo_attention``; 4.89 GFLOP at
    224 against nn.Unfold's 4.31, the extra being the logits outside each window); where a block has no tile the ONNX
    recipe unfolds by two one-hot convs, the OpenVINO one by nn.Unfold. Both are the model as written, output for
    output (up to float rounding); a torch runtime (CPU here, the CUDA ones alike) takes either by
    ``rewrite_format`` or ``HVIT_TORCH_REWRITES``."""
    from torch.utils.flop_counter import FlopCounterMode

    from hvit_deploy import create_model
    from hvit_deploy.runtimes.torch_cpu import rewrite_format

    spec = {"model": "acmix_resnet26", "rewrite": True, "threads": 1, "input_size": 128}
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128), dtype=np.float32)
    torch.manual_seed(0)
    with torch.inference_mode():
        ref = create_model("acmix_resnet26", input_size=128).eval()(torch.from_numpy(x)).numpy()
    flops, rts = {}, {}
    for fmt in ("onnx", "openvino"):
        rt = rts[fmt] = open_runtime("torch", {**spec, "rewrite_format": fmt})
        assert rt.readback["rewrites_of"] == fmt
        np.testing.assert_allclose(rt.predict([x])[0], ref, atol=1e-5, rtol=1e-5)
        with FlopCounterMode(display=False) as fc:
            rt.predict([x])
        flops[fmt] = fc.get_total_flops()
        rt.close()
    recipe = load_recipe("acmix")
    for fmt in ("onnx", "openvino"):
        assert rts[fmt].rewrites == recipe.rewrites_for(fmt) and rts[fmt].rewrites[-1] == "acmix.halo_attention"
    assert "acmix.unfold_as_separable_conv" in rts["onnx"].rewrites
    assert not any("unfold" in n for n in rts["openvino"].rewrites)
    # at 128 every block has a tile (32, 16, 8, 4 -> 8, 8, 8, 4), so the unfold forms go unused: the same FLOPs
    assert flops["onnx"] == flops["openvino"] > 0
    monkeypatch.setenv("HVIT_TORCH_REWRITES", "openvino")
    assert rewrite_format({}) == "openvino" and rewrite_format({"rewrite_format": "coreml"}) == "coreml"
    monkeypatch.setenv("HVIT_TORCH_REWRITES", "tensorrt")
    with pytest.raises(ValueError, match="unknown rewrite recipe 'tensorrt' for the torch runtimes"):
        rewrite_format({})
