"""The runtime registry: one class per runtime, found by name or alias, probed without importing runtimes, and
the one setup that export validation and hvit-bench share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hvit_deploy.errors import HvitError
from hvit_deploy.formats import format_names
from hvit_deploy.runtimes import (
    Runtime, canonical_runtime, get_runtime, gpu_runtimes, list_runtimes, run_artifact, runtime_names,
    runtimes_for_format)

ROOT = Path(__file__).resolve().parents[1]


def test_registry_lists_every_runtime_with_its_facts():
    names = runtime_names()
    assert names[:3] == ("torch", "onnxruntime", "openvino")
    assert {"torch-cuda", "onnxruntime-cuda", "openvino-gpu", "coreml"} <= set(names)
    assert set(gpu_runtimes()) >= {"torch-cuda", "onnxruntime-cuda", "openvino-gpu"}
    assert "onnxruntime" in runtimes_for_format("onnx") and "openvino" in runtimes_for_format("openvino")
    assert set(runtimes_for_format(None)) >= {"torch", "torch-cuda"}
    for rt in list_runtimes():
        assert issubclass(rt, Runtime) and rt.package and rt.description
        assert rt.format is None or rt.format in format_names()
        decided, reason = rt.quick_check()
        assert decided or rt.needs_probe  # only runtimes that need a probe process stay undecided
        if decided and reason is None:
            assert rt.availability() is None


@pytest.mark.parametrize("alias, name", [("ort", "onnxruntime"), ("OV", "openvino"), ("pytorch", "torch"),
                                         ("cuda", "torch-cuda"), ("ort_cuda", "onnxruntime-cuda")])
def test_aliases(alias, name):
    assert canonical_runtime(alias) == name


def test_unknown_runtime_suggests_close_names():
    with pytest.raises(HvitError, match="unknown backend 'onnxruntme'; did you mean onnxruntime"):
        get_runtime("onnxruntme")


def test_cpu_runtimes_are_available_here():
    for name in ("torch", "onnxruntime", "openvino"):
        assert get_runtime(name).availability() is None


def test_every_runtime_is_documented():
    """docs/bench.md has a row for every registered runtime (the table is checked against the registry)."""
    text = (ROOT / "docs" / "bench.md").read_text()
    for name in runtime_names():
        assert f"| `{name}` |" in text, name


def test_one_session_setup_for_validation_and_timing(tmp_path):
    """run_artifact (what export validation calls) and a timing session agree on the output and on the
    settings the runtime reports back."""
    import torch

    from hvit_deploy.runtimes import open_runtime

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten()).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, (torch.from_numpy(x),), str(path), dynamo=False, input_names=["input"],
                      output_names=["logits"])
    ref = m(torch.from_numpy(x)).detach().numpy()
    out = run_artifact("onnxruntime", path, [x], threads=1)[0]
    assert np.abs(out - ref).max() < 1e-5
    rt = open_runtime("onnxruntime", {"artifact": str(path), "threads": 1, "input_shape": [1, 3, 16, 16]})
    rt.prepare()
    rt.call()
    assert rt.readback["intra_op_threads"] == 1 and rt.readback["execution_mode"] == "ORT_SEQUENTIAL"
    assert rt.thread_notes(2, rt.readback) == ["onnxruntime reports intra_op_threads=1, not the 2 asked for"]
    rt.close()

    import openvino as ov

    xml = tmp_path / "m.xml"
    ov.save_model(ov.convert_model(m, example_input=torch.from_numpy(x)), str(xml), compress_to_fp16=False)
    out = run_artifact("openvino", xml, [x], threads=1)[0]
    assert np.abs(out - ref).max() < 1e-5
    rt = open_runtime("openvino", {"artifact": str(xml), "threads": 1, "input_shape": [1, 3, 16, 16]})
    assert rt.readback["INFERENCE_NUM_THREADS"] == 1 and rt.readback["INFERENCE_PRECISION_HINT"] == "f32"


def test_cuda_variants_are_runtimes_of_their_own():
    """CUDA graphs and FP16 are separate runtimes, so results keep them as separate entries."""
    for name in ("torch-cuda-graphs", "torch-cuda-fp16"):
        rt = get_runtime(name)
        assert rt.device_kind == "gpu" and rt.format is None and rt.needs_probe
        import torch

        if not torch.cuda.is_available():
            assert "CUDA" in rt.availability()


@pytest.mark.gpu
def test_cuda_graphs_and_fp16_time_on_the_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    import json

    from hvit_deploy.cli.bench import main

    here = Path(__file__).parent
    out = tmp_path / "r.json"
    assert main(["--models", "bench_tiny", "--backends", "torch-cuda", "torch-cuda-graphs", "torch-cuda-fp16",
                 "--variants", "original", "--iters", "60", "--rounds", "3", "--out", str(out), "--plugin",
                 str(here / "bench_models.py"), "--profile", str(here / "data" / "bench_fast.yaml"),
                 "--no-progress"]) == 0
    by = {e["backend"]: e for e in json.loads(out.read_text())["results"]}
    assert all(e["status"] == "ok" for e in by.values())
    assert by["torch-cuda-graphs"]["threads_readback"]["graph_max_abs_vs_eager"] < 1e-3
    assert by["torch-cuda-fp16"]["threads_readback"]["fp16_cosine_vs_fp32"] >= 0.999


def test_torch_runtimes_leave_the_callers_autograd_mode_alone():
    """The torch runtime enters inference mode per call, never for the session's life. It used to hold a mode guard
    from load on: when such a runtime was garbage-collected, its guard restored the mode it had found, in the
    middle of another runtime's calls; that runtime's model, made in inference mode, then met autograd ("Inference
    tensors cannot be saved for backward", a whole-suite CI failure in the bf16 gate)."""
    import gc
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import bench_models  # noqa: F401  (registers bench_tiny)

    from hvit_deploy.runtimes import RuntimeSpec

    spec = RuntimeSpec(model="bench_tiny", backend="torch", threads=1)
    state = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())
    with torch.inference_mode():
        rt = get_runtime("torch")(spec)
    assert (torch.is_inference_mode_enabled(), torch.is_grad_enabled()) == state == (False, True)
    assert not any(p.requires_grad for p in rt.model.parameters())
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    (y,) = rt.predict([x])
    with torch.inference_mode():
        ref = rt.model(torch.from_numpy(x)).numpy()
    assert y.shape == (1, 10) and np.isfinite(y).all() and np.array_equal(y, ref)
    rt.prepare()
    assert (torch.is_inference_mode_enabled(), torch.is_grad_enabled()) == state
    out = rt.call()
    assert out.is_inference() and not out.requires_grad and out.shape == (1, 10)

    # the failure: one runtime dropped (in a reference cycle, so the collector frees it later) while another one
    # computes under the caller's inference mode; the collection must not switch that mode off
    dropped = get_runtime("torch")(spec)
    dropped.me = dropped
    del dropped
    with torch.inference_mode():
        gc.collect()
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
        (y2,) = rt.predict([x])
    assert np.array_equal(y2, ref)
    assert (torch.is_inference_mode_enabled(), torch.is_grad_enabled()) == state
