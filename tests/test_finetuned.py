"""Fine-tuned classifiers: the class count from the checkpoint's head, --num-classes, --labels, and the metadata
(labels, preprocessing) that every artifact carries."""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch

from hvit_deploy import create_model, get_spec
from hvit_deploy.cli.export import main
from hvit_deploy.errors import CheckpointError, HvitError, HvitNotice, LabelsError
from hvit_deploy.export import ExportSession
from hvit_deploy.formats.coreml import check_program, inspect_package
from hvit_deploy.formats.metadata import read_metadata
from hvit_deploy.formats.onnx import run_onnx
from hvit_deploy.formats.openvino import run_openvino
from hvit_deploy.labels import labels_sha256, read_labels

LABELS = [f"class-{i}" for i in range(10)]
PREPROCESSING_KEYS = ("mean", "std", "input_size", "color_order", "layout", "value_range", "crop_pct",
                      "interpolation")


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """An efficientmod_xxs fine-tuned to 10 classes, saved the way timm's train.py saves it."""
    torch.manual_seed(3)
    model = create_model("efficientmod_xxs", num_classes=10)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("ft") / "ft.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 30, "arch": "efficientMod_xxs"}, path)
    return model, path


@pytest.mark.parametrize("name", ["efficientmod_xxs", "smt_t", "twins_pcpvt_s", "twins_svt_s", "crossvit_ti",
                                  "acmix_swin_t", "acmix_resnet26"])
def test_head_keys_name_every_familys_classifier(name):
    """``ModelSpec.head_keys`` are exactly the modules the builder's num_classes sizes (on the meta device)."""
    spec = get_spec(name)
    with torch.device("meta"):
        seven = spec.builder(num_classes=7).state_dict()
        headless = spec.builder(num_classes=0).state_dict()
    for key in spec.head_keys:
        assert seven[f"{key}.weight"].shape[0] == 7 and seven[f"{key}.bias"].shape == (7,)
    prefixes = tuple(f"{k}." for k in spec.head_keys)
    assert set(seven) - set(headless) == {k for k in seven if k.startswith(prefixes)}
    assert not any(k.startswith(prefixes) for k in headless)


def test_class_count_read_from_the_checkpoint(finetuned):
    model, path = finetuned
    with pytest.warns(HvitNotice, match=r"ft.pth has a 10-class head \(head\), not 1000"):
        loaded = create_model("efficientmod_xxs", checkpoint=path)
    assert loaded.hvit_num_classes == 10 and loaded.head.weight.shape == (10, 256)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the class count asked for matches: nothing to say
        create_model("efficientmod_xxs", checkpoint=path, num_classes=10)


def test_num_classes_zero_drops_the_head(finetuned):
    model, path = finetuned
    feats = create_model("efficientmod_xxs", checkpoint=path, num_classes=0)
    assert feats.hvit_num_classes == 0 and isinstance(feats.head, torch.nn.Identity)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = feats(x)
        assert out.shape == (1, 256)
        assert torch.equal(out, model.forward_head(model.forward_features(x), pre_logits=True))


def test_num_classes_that_does_not_fit_the_checkpoint(finetuned):
    _, path = finetuned
    with pytest.raises(CheckpointError, match="ft.pth has a 10-class head, not the 5 classes asked for"):
        create_model("efficientmod_xxs", checkpoint=path, num_classes=5)
    with pytest.raises(HvitError, match="num_classes must be a whole number >= 0"):
        create_model("efficientmod_xxs", num_classes=-1)


def test_crossvit_two_heads(tmp_path):
    ft = create_model("crossvit_ti", num_classes=4)
    path = tmp_path / "crossvit_ft.pth"
    torch.save(ft.state_dict(), path)
    with pytest.warns(HvitNotice, match=r"4-class head \(head.0/head.1\)"):
        loaded = create_model("crossvit_ti", checkpoint=path)
    assert loaded.head[0].weight.shape == (4, 96) and loaded.head[1].weight.shape == (4, 192)
    assert create_model("crossvit_ti", checkpoint=path, num_classes=0)(torch.randn(1, 3, 240, 240)).shape == (1, 288)


@pytest.mark.parametrize("text", [
    "\n".join(LABELS) + "\n\n",
    json.dumps(LABELS),
    json.dumps({str(i): name for i, name in reversed(list(enumerate(LABELS)))}),
])
def test_labels_file_formats(tmp_path, text):
    path = tmp_path / "labels"
    path.write_text(text)
    assert read_labels(path) == LABELS


@pytest.mark.parametrize("text,message", [
    ("", "is empty"),
    ("a\n\nb\n", "line 2 is empty"),
    ('{"0": "a", "2": "b"}', "index 1 is missing"),
    ('["a", 3]', "label 1 is not a non-empty string"),
    ("[oops", "is not valid JSON"),
])
def test_bad_labels_files(tmp_path, text, message):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(LabelsError, match=message):
        read_labels(path)


def _one_line_error(cli, *args):
    rc, _, err = cli(main, *args)
    lines = [line for line in err.strip().splitlines() if line.startswith("hvit-export: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_bad_classes_and_labels(cli, tmp_path, finetuned):
    _, ckpt = finetuned
    out = tmp_path / "o"
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert "--num-classes must be 0 (no head: pooled features) or more, not -1" in _one_line_error(
        cli, "efficientmod_xxs", "--num-classes", "-1", "--out", out)
    assert "labels file not found: " in _one_line_error(cli, "efficientmod_xxs", "--labels", tmp_path / "no.txt")
    assert "labels file empty.txt is empty" in _one_line_error(cli, "efficientmod_xxs", "--labels", empty)
    assert "labels file three.txt has 3 labels but the model has 10 classes" in _one_line_error(
        cli, "efficientmod_xxs", "--checkpoint", ckpt, "--labels", three, "--out", out)
    assert "the model is built without one" in _one_line_error(
        cli, "efficientmod_xxs", "--num-classes", "0", "--labels", three, "--out", out)
    assert "10-class head, not the 3 classes asked for" in _one_line_error(
        cli, "efficientmod_xxs", "--checkpoint", ckpt, "--num-classes", "3", "--out", out)
    assert not list(out.glob("*.onnx"))


@pytest.mark.slow
def test_finetuned_export_to_every_format(cli, tmp_path, finetuned):
    """The issue's case: a 10-class efficientmod_xxs in {'state_dict': ...} exports, validates, carries its
    labels and preprocessing in every artifact and in the manifest."""
    model, ckpt = finetuned
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(LABELS))
    out = tmp_path / "out"
    rc, stdout, err = cli(main, "efficientmod_xxs", "--checkpoint", ckpt, "--labels", labels, "--to", "onnx", "openvino", "coreml",
                          "--out", out)
    assert rc == 0, err
    assert "3 of 3 exports succeeded" in stdout
    notes = [line for line in err.splitlines() if line.startswith("hvit-export: note:")]
    assert notes == ["hvit-export: note: efficientmod_xxs: ft.pth has a 10-class head (head), not 1000: "
                     "building efficientmod_xxs with 10 classes"]
    manifest = {a["format"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert set(manifest) == {"onnx", "openvino", "coreml"}
    for fmt, entry in manifest.items():
        assert entry["num_classes"] == 10 and entry["output_shape"] == [1, 10]
        assert entry["labels"] == {"count": 10, "sha256": labels_sha256(LABELS), "file": "labels.json"}
        pre = entry["preprocessing"]
        assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]
        assert pre["input_size"] == [3, 224, 224] and pre["crop_pct"] == 0.875 and pre["value_range"] == [0, 1]
        meta = read_metadata(out / entry["path"])
        assert json.loads(meta["labels"]) == LABELS and meta["num_classes"] == "10"
        assert all(k in meta for k in PREPROCESSING_KEYS), (fmt, sorted(meta))
        assert (meta["color_order"], meta["layout"], meta["value_range"]) == ("RGB", "NCHW", "0-1")
        assert json.loads(meta["std"]) == [0.229, 0.224, 0.225] and meta["interpolation"] == "bicubic"
        assert meta["model"] == "efficientmod_xxs" and json.loads(meta["input_shape"]) == [1, 3, 224, 224]
        if fmt != "coreml":
            v = entry["validation"]
            assert v["max_abs"] < 1e-4 and v["top1"] == 1.0 and v["inputs"] == 4
    x = np.random.default_rng(5).standard_normal((1, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for name, run in (("efficientmod_xxs.onnx", run_onnx), ("efficientmod_xxs.xml", run_openvino)):
        np.testing.assert_allclose(run(out / name, [x])[0], ref, atol=1e-4)
    graph = onnx.load(str(out / "efficientmod_xxs.onnx"))
    assert [o.name for o in graph.graph.output] == ["logits"]
    assert [d.dim_value for d in graph.graph.output[0].type.tensor_type.shape.dim] == [1, 10]
    facts = inspect_package(out / "efficientmod_xxs.mlpackage")
    assert facts["outputs"] == [{"name": "classLabel", "type": "stringType"},
                                {"name": "classLabel_probs", "type": "dictionaryType"}]
    assert facts["op_types"]["classify"] == 1 and facts["op_types"]["softmax"] >= 1
    assert check_program(facts, (1, 3, 224, 224), (1, 10), "fp32", class_labels=LABELS) == []
    assert check_program(facts, (1, 3, 224, 224), (1, 10), "fp32")  # not the plain logits program
    assert manifest["coreml"]["outputs"] == ["classLabel", "classLabel_probs"]


@pytest.mark.slow
def test_headless_export(tmp_path, finetuned):
    _, ckpt = finetuned
    session = ExportSession("efficientmod_xxs", checkpoint=ckpt, num_classes=0)
    r = session.export("onnx", tmp_path)
    assert r.ok, r.error
    assert r.entry["output_name"] == "features" and r.entry["output_shape"] == [1, 256]
    assert r.entry["num_classes"] == 0 and r.entry["labels"] is None
    assert r.validation["max_abs"] < 1e-4
    graph = onnx.load(str(r.path))
    assert [o.name for o in graph.graph.output] == ["features"]
    assert read_metadata(r.path)["num_classes"] == "0" and "labels" not in read_metadata(r.path)
    c = session.export("coreml", tmp_path)
    assert c.ok, c.error
    assert inspect_package(c.path)["outputs"] == [{"name": "features", "shape": [1, 256], "dtype": "FLOAT32"}]
