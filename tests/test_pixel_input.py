"""--fold-normalize (pixels 0-255 in, normalised inside) and the Core ML --image-input (ct.ImageType)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hvit_deploy import create_model, get_spec
from hvit_deploy.cli.export import main
from hvit_deploy.formats.coreml import check_program, inspect_package
from hvit_deploy.export.input_layers import (InputAffine, check_image_front, coreml_image_front, fold_normalize,
                                             photo_pixels, to_pixels)
from hvit_deploy.formats.metadata import read_metadata
from hvit_deploy.formats.onnx import run_onnx
from hvit_deploy.export.inputs import load_image
from hvit_deploy.resources import asset


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("efficientmod_xxs")


def test_fold_normalize_equals_the_model_on_normalised_input(model):
    spec = get_spec("efficientmod_xxs")
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    pixels = to_pixels(x, spec)
    assert 0 < float(np.median(pixels)) < 255
    with torch.no_grad():
        diff = (fold_normalize(model, spec)(torch.from_numpy(pixels)) - model(torch.from_numpy(x))).abs().max()
    assert diff < 1e-5


def test_image_front_matches_on_the_shipped_photos(model):
    """Core ML's ImageType (pixel/255 - mean) then the x 1/std layer, emulated, equals the model on the photo
    normalised the evaluation way; leaving out the 1/std layer is caught."""
    spec = get_spec("efficientmod_xxs")
    checks = check_image_front(model, coreml_image_front(model, spec), spec, (224, 224))
    assert [name for name, _, _ in checks] == ["chelsea.png", "coffee.png"]
    for _, ref, emulated in checks:
        assert ref.shape == (1, 1000) and np.abs(ref - emulated).max() < 1e-5
    pixels = photo_pixels("chelsea.png", (224, 224), spec)
    assert pixels.min() >= 0 and pixels.max() <= 255 and np.array_equal(pixels, np.round(pixels))
    normalised = load_image(asset("chelsea.png"), (224, 224), spec=spec)  # the evaluation transform
    np.testing.assert_allclose(to_pixels(normalised, spec), pixels, atol=1e-3)
    wrong = InputAffine(model, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    assert max(np.abs(r - e).max() for _, r, e in check_image_front(model, wrong, spec, (224, 224))) > 1e-2


def test_image_input_needs_coreml(cli, tmp_path):
    rc, _, err = cli(main, "efficientmod_xxs", "--to", "onnx", "--image-input", "--out", tmp_path)
    assert rc == 2 and err.strip() == ("hvit-export: error: --image-input applies to Core ML only, and --to asks "
                                       "for onnx; use --fold-normalize for ONNX/OpenVINO pixel input")
    rc, _, err = cli(main, "efficientmod_xxs", "--to", "coreml", "--image-input", "--dynamic-batch")
    assert rc == 2 and "--image-input takes one image" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_pixel_and_image_input_exports(cli, tmp_path, model):
    torch.save(model.state_dict(), tmp_path / "w.pth")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"n{i:04d}\n" for i in range(1000)))
    out = tmp_path / "out"
    rc, stdout, err = cli(main, "efficientmod_xxs", "--checkpoint", tmp_path / "w.pth", "--to", "onnx", "coreml",
                          "--fold-normalize", "--image-input", "--labels", labels, "--out", out)
    assert rc == 0, err
    assert "hvit-export: note: --image-input applies to Core ML only; onnx take a tensor" in err
    entries = {a["format"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    onnx_entry, ml_entry = entries["onnx"], entries["coreml"]
    assert onnx_entry["path"] == "efficientmod_xxs-norm.onnx" and onnx_entry["input_kind"] == "pixels"
    assert onnx_entry["validation"]["max_abs"] < 1e-4 and onnx_entry["validation"]["top1"] == 1.0
    assert onnx_entry["preprocessing"]["value_range"] == [0, 255]
    meta = read_metadata(out / "efficientmod_xxs-norm.onnx")
    assert (meta["input_kind"], meta["value_range"], meta["pixel_scale"]) == ("pixels", "0-255", "1")
    spec = get_spec("efficientmod_xxs")
    pixels = photo_pixels("coffee.png", (224, 224), spec)
    with torch.no_grad():
        ref = model((torch.from_numpy(pixels) / 255 - torch.tensor(spec.mean).reshape(1, 3, 1, 1))
                    / torch.tensor(spec.std).reshape(1, 3, 1, 1)).numpy()
    np.testing.assert_allclose(run_onnx(out / "efficientmod_xxs-norm.onnx", [pixels])[0], ref, atol=1e-4)

    assert ml_entry["path"] == "efficientmod_xxs-image.mlpackage" and ml_entry["input_kind"] == "image"
    check = ml_entry["image_input_check"]
    assert check["photos"] == ["chelsea.png", "coffee.png"] and check["max_abs"] < 1e-4 and check["top1"] == 1.0
    facts = inspect_package(out / "efficientmod_xxs-image.mlpackage")
    assert facts["inputs"] == [{"name": "input", "type": "imageType", "width": 224, "height": 224,
                                "color_space": "RGB"}]
    assert [o["name"] for o in facts["outputs"]] == ["classLabel", "classLabel_probs"]
    labels_list = [f"n{i:04d}" for i in range(1000)]
    assert check_program(facts, (1, 3, 224, 224), (1, 1000), "fp32", class_labels=labels_list, image_input=True) == []
    assert check_program(facts, (1, 3, 224, 224), (1, 1000), "fp32", class_labels=labels_list)  # not a tensor input
    meta = read_metadata(out / "efficientmod_xxs-image.mlpackage")
    assert meta["input_kind"] == "image" and json.loads(meta["labels"])[:2] == ["n0000", "n0001"]
