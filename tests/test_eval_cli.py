"""``hvit-eval`` as users call it: its errors (one line on stderr, exit 2), ``--limit``, ``--no-eager``,
``--num-classes``, ``--json`` and an exported artifact scored against eager PyTorch. Images are made from the
shipped photos (hvit_deploy/assets), laid out as an ImageFolder."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image, ImageOps

from hvit_deploy import create_model
from hvit_deploy.cli.eval import main as eval_main
from hvit_deploy.cli.export import main as export_main
from hvit_deploy.resources import asset

NAME, SIZE = "efficientmod_xxs", 64


def _image_folder(root, per_class: int = 3):
    """cat/ and cup/ with ``per_class`` variants of each photo (crops and mirror images)."""
    for cls, photo in (("cat", "chelsea.png"), ("cup", "coffee.png")):
        img = Image.open(asset(photo)).convert("RGB")
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            w, h = img.size
            v = img.crop((i * w // 20, i * h // 20, w - i * w // 30, h - i * h // 30))
            (ImageOps.mirror(v) if i % 2 else v).save(root / cls / f"{cls}{i}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = _image_folder(root / "data")
    torch.manual_seed(0)
    torch.save(create_model(NAME, num_classes=2).state_dict(), root / "w2.pth")
    rc = export_main([NAME, "--checkpoint", str(root / "w2.pth"), "--num-classes", "2", "--input-size", str(SIZE),
                      "--to", "onnx", "--out", str(root / "out")])
    assert rc == 0
    onnx_path = next((root / "out").glob("*.onnx"))
    return root, data, onnx_path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hvit-eval: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_not_an_image_folder(cli, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.open(asset("chelsea.png")).save(flat / "a.png")
    rc, _, err = cli(eval_main, NAME, "--data", flat, "--no-eager")
    assert rc == 2 and "is not an ImageFolder" in _one_line(err)


def test_data_folder_missing_or_empty(cli, tmp_path):
    rc, _, err = cli(eval_main, NAME, "--data", tmp_path / "nope")
    assert rc == 2 and "--data folder not found" in _one_line(err)
    rc, _, err = cli(eval_main, NAME, "--data", tmp_path)
    assert rc == 2 and "has no images" in _one_line(err)


def test_missing_artifact(cli, tmp_path):
    data = _image_folder(tmp_path / "data", 1)
    rc, _, err = cli(eval_main, NAME, tmp_path / "missing.onnx", "--data", data, "--no-eager")
    assert rc == 2 and _one_line(err) == f"hvit-eval: error: artifact not found: {tmp_path / 'missing.onnx'}"


def test_unknown_artifact_type(cli, tmp_path):
    data = _image_folder(tmp_path / "data", 1)
    weird = tmp_path / "model.engine"
    weird.write_bytes(b"\0" * 16)
    rc, _, err = cli(eval_main, NAME, weird, "--data", data, "--no-eager")
    assert rc == 2
    assert _one_line(err) == ("hvit-eval: error: model.engine: unknown artifact type "
                              "(expected .onnx, .xml, .mlpackage, .pte or .tflite)")


def test_unknown_model(cli, tmp_path):
    data = _image_folder(tmp_path / "data", 1)
    rc, _, err = cli(eval_main, "efficientmod_xxxl", "--data", data)
    assert rc == 2 and "unknown model 'efficientmod_xxxl'" in _one_line(err)


def test_artifact_against_eager_with_num_classes(cli, setup):
    """--num-classes 2 builds the 2-class head the checkpoint has; the ONNX file exported from the same
    checkpoint agrees with eager PyTorch on every image."""
    root, data, onnx_path = setup
    rc, out, err = cli(eval_main, NAME, onnx_path, "--data", data, "--checkpoint", root / "w2.pth",
                       "--num-classes", "2", "--input-size", SIZE, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["classes"] == 2 and doc["preprocessing"]["size"] == [SIZE, SIZE]
    res = {r["name"]: r for r in doc["results"]}
    eager, art = res["pytorch (eager)"], res[onnx_path.name]
    assert eager["images"] == art["images"] == 6
    assert art["top1_agreement"] == 1.0 and art["top1"] == eager["top1"]
    assert eager["top5"] == 1.0  # two classes: both are always in the top five
    # --num-classes is honoured: a 5-class head cannot take the 2-class checkpoint (one line, exit 2) ...
    rc, _, err = cli(eval_main, NAME, "--data", data, "--checkpoint", root / "w2.pth", "--num-classes", "5",
                     "--input-size", SIZE)
    assert rc == 2 and "has a 2-class head, not the 5 classes asked for" in _one_line(err)
    # ... and without a checkpoint it sizes the head: 3 classes always hold the label in their top five
    rc, out, err = cli(eval_main, NAME, "--data", data, "--num-classes", "3", "--input-size", SIZE, "--json")
    assert rc == 0, err
    assert json.loads(out)["results"][0]["top5"] == 1.0


def test_limit_and_no_eager(cli, setup):
    root, data, onnx_path = setup
    rc, out, err = cli(eval_main, NAME, onnx_path, "--data", data, "--no-eager", "--limit", "4",
                       "--input-size", SIZE, "--json")
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert [r["name"] for r in results] == [onnx_path.name]  # no eager row
    assert results[0]["images"] == 4 and "top1_agreement" not in results[0]
    # the first 4 in sorted order: cat0..cat2 then cup0; the table form prints the same row
    rc, table, _ = cli(eval_main, NAME, onnx_path, "--data", data, "--no-eager", "--limit", "4",
                       "--input-size", SIZE)
    assert rc == 0 and onnx_path.name in table and "pytorch (eager)" not in table
    assert table.splitlines()[-1].split()[1] == "4"


def test_trust_checkpoint(cli, setup, tmp_path):
    """A training file with an object outside the safe list is refused (one line, exit 2) unless
    --trust-checkpoint is given; then it loads and the eager model runs."""
    from fractions import Fraction

    root, data, _ = setup
    ckpt = tmp_path / "custom.pth"
    torch.save({"model": torch.load(root / "w2.pth"), "lr": Fraction(1, 3)}, ckpt)
    args = [NAME, "--data", data, "--checkpoint", ckpt, "--input-size", SIZE, "--limit", "2", "--json"]
    rc, _, err = cli(eval_main, *args)
    assert rc == 2 and "--trust-checkpoint" in _one_line(err) and "Fraction" in err
    rc, out, err = cli(eval_main, *args, "--trust-checkpoint")
    assert rc == 0, err
    (r,) = json.loads(out)["results"]
    assert r["name"] == "pytorch (eager)" and r["images"] == 2
