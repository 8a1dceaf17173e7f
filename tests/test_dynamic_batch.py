"""--dynamic-batch: rewrites that leave the batch as -1, artifacts with a symbolic batch, validation at batch 4."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from hvit_deploy import create_model, rewrite
from hvit_deploy.cli.export import main
from hvit_deploy.errors import RewriteError
from hvit_deploy.export import ExportSession
from hvit_deploy.formats.coreml import check_program, inspect_package
from hvit_deploy.formats.metadata import read_metadata
from hvit_deploy.formats.onnx import run_onnx
from hvit_deploy.formats.openvino import run_openvino


@pytest.mark.parametrize("name,backend", [("efficientmod_xxs", "coreml"), ("twins_svt_s", "onnx"),
                                          ("twins_pcpvt_s", "openvino")])
def test_dynamic_rewrites_take_any_batch(name, backend):
    """Probed at batch 1, the dynamic form runs at batch 3 with the outputs of the model as written."""
    torch.manual_seed(0)
    model = create_model(name)
    fast = rewrite(model, backend, dynamic_batch=True)
    assert fast.hvit_dynamic_batch
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        assert (fast(x) - model(x)).abs().max() < 1e-5
        assert (fast(x[:1]) - model(x[:1])).abs().max() < 1e-5


def test_rewrites_that_bake_the_batch_are_refused_by_name():
    with pytest.raises(RewriteError, match=r"rewrite 'acmix.static_shapes' bakes the batch size"):
        rewrite(create_model("acmix_resnet26"), "onnx", dynamic_batch=True)
    session = ExportSession("crossvit_ti", dynamic_batch=True)
    with pytest.raises(RewriteError, match=r"crossvit_ti -> onnx: rewrite 'crossvit.static_shapes' bakes"):
        session.export("onnx", "unused-dir")


def test_cli_dynamic_batch_errors(cli, tmp_path):
    rc, _, err = cli(main, "crossvit_ti", "--dynamic-batch", "--out", tmp_path)
    lines = err.strip().splitlines()
    assert rc == 2 and lines[-1].startswith("hvit-export: error: crossvit_ti -> onnx: rewrite 'crossvit.static_shapes'")
    assert not list(tmp_path.glob("*.onnx"))
    rc, _, err = cli(main, "efficientmod_xxs", "--dynamic-batch", "--batch", "2", "--out", tmp_path)
    assert rc == 2 and err.strip() == "hvit-export: error: --dynamic-batch takes any batch size; leave out --batch"


def _batch_dim(value_info) -> str:
    d = value_info.type.tensor_type.shape.dim[0]
    return d.dim_param if not d.HasField("dim_value") else str(d.dim_value)


@pytest.mark.slow
def test_efficientmod_dynamic_every_format(cli, tmp_path):
    out = tmp_path / "out"
    model = create_model("efficientmod_xxs")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    rc, stdout, err = cli(main, "efficientmod_xxs", "--checkpoint", tmp_path / "w.pth", "--dynamic-batch",
                          "--to", "onnx", "openvino", "coreml", "--out", out)
    assert rc == 0, err
    manifest = {a["format"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert {a["path"] for a in manifest.values()} == {"efficientmod_xxs-dyn.onnx", "efficientmod_xxs-dyn.xml",
                                                       "efficientmod_xxs-dyn.mlpackage"}
    for fmt, entry in manifest.items():
        assert entry["dynamic_batch"] is True and entry["input_shape"] == [-1, 3, 224, 224]
        assert entry["output_shape"] == [-1, 1000]
        assert json.loads(read_metadata(out / entry["path"])["input_shape"]) == [-1, 3, 224, 224]
        if fmt != "coreml":
            v = entry["validation"]
            assert v["batches"] == [1, 4] and v["inputs_used"][-1] == "batch-4" and v["inputs"] == 5
            assert v["batch-4"]["max_abs"] < 1e-4 and v["batch-4"]["top1"] == 1.0 and v["max_abs"] < 1e-4
    graph = onnx.load(str(out / "efficientmod_xxs-dyn.onnx"))
    assert _batch_dim(graph.graph.input[0]) == "batch" and _batch_dim(graph.graph.output[0]) == "batch"
    x = np.random.default_rng(1).standard_normal((3, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for path, run in ((out / "efficientmod_xxs-dyn.onnx", run_onnx), (out / "efficientmod_xxs-dyn.xml", run_openvino)):
        got = run(path, [x, x[:1]])
        assert got[0].shape == (3, 1000) and got[1].shape == (1, 1000)
        np.testing.assert_allclose(got[0], ref, atol=1e-4)
    facts = inspect_package(out / "efficientmod_xxs-dyn.mlpackage")
    assert facts["inputs"][0]["shape"] == [1, 3, 224, 224] and facts["inputs"][0]["batch_range"] == [1, 64]
    assert check_program(facts, (1, 3, 224, 224), (1, 1000), "fp32", dynamic_batch=True) == []
    static = check_program(facts, (1, 3, 224, 224), (1, 1000), "fp32")
    assert "input batch ranges over [1, 64] in a static program" in static


@pytest.mark.slow
def test_smt_dynamic_onnx_validates_at_batch_4(tmp_path):
    session = ExportSession("smt_t", dynamic_batch=True)
    r = session.export("onnx", tmp_path)
    assert r.ok, r.error
    assert r.path.name == "smt_t-dyn.onnx" and r.entry["onnxsim"] == "simplified"
    assert r.validation["batches"] == [1, 4] and r.validation["batch-4"]["max_abs"] < 1e-4
    graph = onnx.load(str(r.path))
    assert _batch_dim(graph.graph.input[0]) == "batch"
    x = session.batched[1]
    np.testing.assert_allclose(run_onnx(r.path, [x])[0], session.batched[2], atol=1e-4)
