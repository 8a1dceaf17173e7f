"""``onnxruntime-openvino``: registered from its module alone, listed, and skipped cleanly (with the reason)
where the onnxruntime-openvino package is not installed; where it is, it runs an ONNX file like ORT's CPU EP."""
from __future__ import annotations

import numpy as np
import pytest

from hvit_deploy.runtimes import get_runtime, run_artifact, runtime_names, runtimes_for_format


def test_registered_from_its_module():
    rt = get_runtime("ort-openvino")
    assert rt.name == "onnxruntime-openvino" and rt.name in runtime_names()
    assert rt.format == "onnx" and "onnxruntime-openvino" in runtimes_for_format("onnx")
    assert rt.needs_probe and rt.quick_check() == (False, None)


def test_skips_with_the_reason_or_runs(tmp_path):
    import onnxruntime as ort

    rt = get_runtime("onnxruntime-openvino")
    reason = rt.availability()
    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        assert reason and reason.startswith("onnxruntime-openvino is not installed here")
        assert "CPUExecutionProvider" in reason  # the providers this onnxruntime does have
        pytest.skip(reason)
    assert reason is None  # pragma: no cover - only where onnxruntime-openvino replaces onnxruntime
    import torch

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8), dtype=np.float32)
    torch.onnx.export(m, (torch.from_numpy(x),), str(tmp_path / "m.onnx"), dynamo=False)
    out = run_artifact("onnxruntime-openvino", tmp_path / "m.onnx", [x], threads=1)[0]
    assert np.abs(out - m(torch.from_numpy(x)).detach().numpy()).max() < 1e-4


def test_hvit_bench_lists_it(capsys):
    from hvit_deploy.cli.bench import main

    assert main(["--list-backends", "--backends", "onnxruntime-openvino"]) == 0
    import onnxruntime as ort

    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    name, status = out.split(None, 1)
    status = status.strip()
    assert name == "onnxruntime-openvino"
    if "OpenVINOExecutionProvider" in ort.get_available_providers():  # pragma: no cover - not on CI machines
        assert status == "available"
    else:
        # the exact status word and the same reason the runtime gives, not "available" found inside it
        reason = get_runtime("onnxruntime-openvino").availability()
        assert status == f"unavailable here: {reason}"
        assert reason.startswith("onnxruntime-openvino is not installed here")
