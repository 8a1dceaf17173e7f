"""Round trips through the real converters for the smallest Twins and CrossViT, and the exporter's checks."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from hvit_deploy.errors import HvitError
from hvit_deploy.export import ExportSession, update_manifest
from hvit_deploy.formats.coreml import inspect_package
from hvit_deploy.metrics import compare, failures
from hvit_deploy.formats.onnx import run_onnx
from hvit_deploy.formats.openvino import run_openvino
from hvit_deploy.recipes import Tolerance, load_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crossvit_session():
    return ExportSession("crossvit_ti")


@pytest.fixture(scope="module")
def svt_session():
    return ExportSession("twins_svt_s")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


def _assert_validated(result, bound=1e-5):
    assert result.ok, result.error
    v = result.validation
    assert v["max_abs"] < bound and v["min_cosine"] > 0.99999 and v["top1"] == 1.0 and v["top5"] == 1.0
    assert v["inputs_used"][-1] == "chelsea.png" and v["inputs"] == 4


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "coreml"])
def test_crossvit_round_trip(crossvit_session, out, fmt):
    r = crossvit_session.export(fmt, out)
    assert r.ok, r.error
    assert r.rewrites == load_recipe("crossvit").rewrites_for(fmt)
    if fmt == "onnx":
        _assert_validated(r)
        graph = onnx.load(str(r.path))
        ops = {n.op_type for n in graph.graph.node}
        assert "Resize" not in ops  # the bicubic resize is two MatMuls with constant matrices
        assert [i.name for i in graph.graph.input] == ["input"] and [o.name for o in graph.graph.output] == ["logits"]
        dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
        assert dims == [1, 3, 240, 240]
        assert r.entry["double_tensors"] == 0
    elif fmt == "openvino":
        _assert_validated(r)
        assert r.path.suffix == ".xml" and r.path.with_suffix(".bin").stat().st_size > 7_000_000 * 4 * 0.99  # fp32
    else:
        facts = inspect_package(r.path)
        assert facts["max_rank"] <= 5 and facts["tensor_dtypes"].get("FLOAT16", 0) == 0
        assert facts["inputs"] == [{"name": "input", "shape": [1, 3, 240, 240], "dtype": "FLOAT32"}]
        assert facts["outputs"][0]["shape"] == [1, 1000]
        assert "upsample_bicubic" not in " ".join(facts["op_types"])
        assert r.validation["ran"] is False  # no Core ML runtime on Linux: the program is checked instead


def test_export_as_written_keeps_the_resize(crossvit_session, out):
    r = crossvit_session.export("onnx", out, rewrite=False)
    _assert_validated(r)
    assert r.path.name == "crossvit_ti-original.onnx" and r.rewrites == []
    assert "Resize" in {n.op_type for n in onnx.load(str(r.path)).graph.node}


def test_coreml_as_written_fails_cleanly(crossvit_session, out):
    r = crossvit_session.export("coreml", out, rewrite=False)
    assert not r.ok and "Core ML conversion failed" in r.error and "\n" not in r.error
    assert not (out / "crossvit_ti-original.mlpackage").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_coreml_fp16_program(crossvit_session, out):
    r = crossvit_session.export("coreml", out, precision="fp16")
    assert r.ok, r.error
    assert r.path.name == "crossvit_ti-fp16.mlpackage"
    assert r.entry["program"]["tensor_dtypes"].get("FLOAT16", 0) > 0


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "coreml"])
def test_twins_svt_round_trip(svt_session, out, fmt):
    r = svt_session.export(fmt, out)
    assert r.ok, r.error
    if fmt != "coreml":
        _assert_validated(r)
        run = run_onnx if fmt == "onnx" else run_openvino
        x = svt_session.inputs[0][1]
        np.testing.assert_allclose(run(r.path, [x])[0], svt_session.references[0], atol=1e-5)
    else:
        assert inspect_package(r.path)["max_rank"] == 5


def test_manifest_records_artifacts(crossvit_session, out):
    results = [crossvit_session.export("onnx", out), crossvit_session.export("openvino", out)]
    path = update_manifest(out, [r.entry for r in results])
    data = json.loads(path.read_text())
    by_path = {a["path"]: a for a in data["artifacts"]}
    onnx_entry = by_path["crossvit_ti.onnx"]
    for key in ("model", "format", "path", "input_shape", "rewrites", "tools", "sha256", "validation"):
        assert key in onnx_entry
    assert onnx_entry["format"] == "onnx" and onnx_entry["input_shape"] == [1, 3, 240, 240]
    assert {"torch", "onnx", "onnxruntime", "openvino", "coremltools"} <= set(onnx_entry["tools"])
    assert by_path["crossvit_ti.xml"]["files"] == ["crossvit_ti.xml", "crossvit_ti.bin"]
    import hashlib

    assert onnx_entry["sha256"] == hashlib.sha256((out / "crossvit_ti.onnx").read_bytes()).hexdigest()


def test_validation_failure_fails_the_export(tmp_path):
    recipe = load_recipe("crossvit").model_copy(deep=True)
    recipe.tolerances = {"default": Tolerance(atol=0.0, rtol=0.0, min_cosine=1.0)}
    session = ExportSession("crossvit_ti", recipe=recipe)
    r = session.export("openvino", tmp_path)
    assert not r.ok and "does not match PyTorch" in r.error and "max|diff|" in r.error
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_metrics_detect_a_wrong_output():
    ref = np.random.default_rng(0).standard_normal((1, 1000)).astype(np.float32)
    fig = compare([(ref, ref[:, ::-1].copy())])
    assert fig.top1 < 1 and fig.min_cosine < 0.5
    assert failures(fig, Tolerance())
    assert not failures(compare([(ref, ref + 1e-7)]), Tolerance())


def test_unknown_format(crossvit_session, tmp_path):
    with pytest.raises(HvitError, match="unknown format 'tensorrt'"):
        crossvit_session.export("tensorrt", tmp_path)


@pytest.mark.macos
@pytest.mark.skipif(not __import__("platform").system() == "Darwin", reason="Core ML runs only on macOS")
def test_coreml_runs_and_matches_on_macos(crossvit_session, out):  # pragma: no cover - macOS only
    r = crossvit_session.export("coreml", out)
    assert r.ok, r.error
    assert r.validation["max_abs"] < 1e-3 and r.validation["top1"] == 1.0


def test_random_weights_are_the_same_network_in_every_export(tmp_path):
    """Without a checkpoint the exported network is drawn from seed 0: two sessions (as two processes would) give
    the same weights, and the caller's random state is left as it was."""
    import torch

    from hvit_deploy.export import ExportSession

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = ExportSession("efficientmod_xxs", validate=False).model.state_dict()
    after = torch.rand(1)
    b = ExportSession("efficientmod_xxs", validate=False).model.state_dict()
    assert torch.equal(before, after)
    assert all(torch.equal(a[k], b[k]) for k in a)
