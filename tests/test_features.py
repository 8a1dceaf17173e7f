"""--features: the four stage maps of the hierarchical families as outputs stage1..stage4, detection checkpoints."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from hvit_deploy import create_model
from hvit_deploy.cli.export import main
from hvit_deploy.export import ExportSession
from hvit_deploy.formats.coreml import inspect_package
from hvit_deploy.export.features import STAGE_NAMES, StageFeatures
from hvit_deploy.formats.onnx import run_onnx
from hvit_deploy.formats.openvino import run_openvino
from hvit_deploy.rewriting import rewrite


@pytest.mark.parametrize("name,size,channels", [
    ("efficientmod_xxs", (3, 256, 384), [32, 64, 128, 256]),
    ("smt_t", (3, 256, 384), [64, 128, 256, 512]),
    ("twins_svt_s", (3, 256, 384), [64, 128, 256, 512]),
    ("acmix_resnet26", (3, 128, 128), [256, 512, 1024, 2048]),
])
def test_stage_maps_of_the_model_and_its_rewritten_form(name, size, channels):
    torch.manual_seed(0)
    model = create_model(name, input_size=size[1:], backbone=True)
    assert model.hvit_num_classes == 0
    x = torch.randn((1,) + size)
    with torch.no_grad():
        ref = StageFeatures(model, size)(x)
        assert [tuple(t.shape) for t in ref] == [(1, c, size[1] // s, size[2] // s)
                                                 for c, s in zip(channels, (4, 8, 16, 32))]
        for backend in ("onnx", "coreml"):
            fast = StageFeatures(rewrite(model, backend, input_size=size), size)(x)
            assert max(float((a - b).abs().max()) for a, b in zip(ref, fast)) < 1e-4
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())  # hooks per call only


def _error(cli, *args) -> str:
    rc, _, err = cli(main, *args)
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("hvit-export: error: ")]
    assert rc == 2 and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


def test_features_bad_input(cli, tmp_path):
    assert "crossvit_ti: crossvit has no feature pyramid" in _error(cli, "crossvit_ti", "--features", "--out", tmp_path)
    assert ("acmix_swin_t cannot take 512x512 features: height and width must be multiples of 224 (its 7x7 windows "
            "at stride 32)") in _error(cli, "acmix_swin_t", "--features", "--input-size", "512", "--out", tmp_path)
    assert "efficientmod_xxs cannot take 500x512 features: height and width must be multiples of 32" in _error(
        cli, "efficientmod_xxs", "--features", "--input-size", "500x512", "--out", tmp_path)
    assert "efficientmod_xxs takes input size 224 or any multiple of 32, not 256x384" in _error(
        cli, "efficientmod_xxs", "--input-size", "256x384", "--out", tmp_path)  # non-square only for backbones
    assert "--labels and --image-input do not apply" in _error(
        cli, "efficientmod_xxs", "--features", "--to", "coreml", "--image-input", "--out", tmp_path)


@pytest.fixture(scope="module")
def detection_checkpoint(tmp_path_factory):
    """An mmdet-style file: the backbone under backbone.*, a neck and heads beside it, no classifier head, and
    extra per-stage norms the classification model does not have."""
    torch.manual_seed(2)
    model = create_model("efficientmod_xxs", num_classes=0)
    sd = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    sd["backbone.norm0.weight"] = torch.ones(32)
    sd["neck.lateral_convs.0.conv.weight"] = torch.zeros(256, 32, 1, 1)
    sd["rpn_head.rpn_cls.weight"] = torch.zeros(3, 256, 1, 1)
    path = tmp_path_factory.mktemp("det") / "mask_rcnn_efficientmod_xxs.pth"
    torch.save({"state_dict": sd, "meta": {"epoch": 12}}, path)
    return model, path


def test_detection_checkpoint_loads_as_a_backbone(detection_checkpoint):
    model, path = detection_checkpoint
    with pytest.warns(Warning) as notes:
        loaded = create_model("efficientmod_xxs", checkpoint=path, backbone=True, input_size=(256, 256))
    text = " | ".join(str(n.message) for n in notes)
    assert "loading the backbone.* keys, 2 other key(s) (neck, heads) dropped" in text
    assert "ignoring 1 key(s) the backbone does not have (norm0.weight)" in text
    own = model.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in loaded.state_dict().items())


@pytest.mark.slow
def test_backbone_export_at_detection_resolutions(cli, tmp_path, detection_checkpoint):
    model, path = detection_checkpoint
    out = tmp_path / "out"
    # 256x256 (not a detector's 512+): the same non-224 backbone path at a quarter of the pixels
    rc, stdout, err = cli(main, "efficientmod_xxs", "--features", "--input-size", "256", "--checkpoint", path,
                          "--to", "onnx", "openvino", "coreml", "--out", out)
    assert rc == 0, err
    entries = {a["format"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    shapes = [[1, 32, 64, 64], [1, 64, 32, 32], [1, 128, 16, 16], [1, 256, 8, 8]]
    for fmt, entry in entries.items():
        assert entry["path"].startswith("efficientmod_xxs-features-256.")
        assert entry["output_name"] == list(STAGE_NAMES) and entry["output_shape"] == shapes
        if fmt != "coreml":
            per = entry["validation"]["outputs"]
            assert list(per) == list(STAGE_NAMES) and all(per[s]["max_abs"] < 1e-4 for s in STAGE_NAMES)
            assert all(per[s]["min_cosine"] > 0.99999 for s in STAGE_NAMES)
    graph = onnx.load(str(out / "efficientmod_xxs-features-256.onnx"))
    assert [o.name for o in graph.graph.output] == list(STAGE_NAMES)
    facts = inspect_package(out / "efficientmod_xxs-features-256.mlpackage")
    assert [(o["name"], o["shape"]) for o in facts["outputs"]] == list(zip(STAGE_NAMES, shapes))
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 256), dtype=np.float32)
    with torch.no_grad():
        ref = [t.numpy() for t in StageFeatures(model, (3, 256, 256))(torch.from_numpy(x))]
    for run, name in ((run_onnx, "efficientmod_xxs-features-256.onnx"),
                      (run_openvino, "efficientmod_xxs-features-256.xml")):
        got = run(out / name, [x], all_outputs=True)[0]
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_non_square_backbone_twins(tmp_path):
    """Twins-PCPVT at a non-square size (a scaled-down 800x1344 aspect), stages validated one by one."""
    session = ExportSession("twins_pcpvt_s", input_size=(320, 544), features=True)
    r = session.export("onnx", tmp_path)
    assert r.ok, r.error
    assert r.path.name == "twins_pcpvt_s-features-320x544.onnx"
    assert r.entry["output_shape"] == [[1, 64, 80, 136], [1, 128, 40, 68], [1, 320, 20, 34], [1, 512, 10, 17]]
    assert max(v["max_abs"] for v in r.validation["outputs"].values()) < 1e-4
