"""The one evaluation transform: per-family numbers, its output, and validation's real image using it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from hvit_deploy.export.inputs import validation_inputs
from hvit_deploy.preprocess import ImageReadError, preprocessing_for
from hvit_deploy.registry import get_spec
from hvit_deploy.resources import asset


@pytest.mark.parametrize("name,size,resize,resize_to,interp", [
    ("crossvit_ti", None, "shorter", 274, "bicubic"),            # 240 / 0.875
    ("crossvit_15_dagger_408", None, "shorter", 408, "bicubic"),  # crop ratio 1.0
    ("smt_t", None, "shorter", 256, "bicubic"),
    ("smt_l", 384, "squash", 384, "bicubic"),                    # 384 fine-tune: no test-time crop
    ("twins_svt_s", None, "shorter", 256, "bicubic"),            # official DeiT-style 256/224 (timm says 0.9)
    ("efficientmod_xxs", None, "shorter", 256, "bicubic"),
    ("acmix_resnet26", None, "shorter", 256, "bilinear"),
])
def test_family_numbers(name, size, resize, resize_to, interp):
    pre = preprocessing_for(name, size)
    assert (pre.resize, pre.resize_to, pre.interpolation) == (resize, resize_to, interp)
    assert pre.size == ((size, size) if size else get_spec(name).input_size[1:])
    d = pre.as_dict()
    assert d["mean"] == [0.485, 0.456, 0.406] and d["std"] == [0.229, 0.224, 0.225] and d["scale"] == "1/255"


def test_matches_the_torchvision_pipeline():
    pre = preprocessing_for("crossvit_ti")
    ref = T.Compose([T.Resize(274, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(240), T.ToTensor(),
                     T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    img = Image.open(asset("coffee.png")).convert("RGB")
    ours = pre.load(asset("coffee.png"))
    assert ours.shape == (1, 3, 240, 240) and ours.dtype == np.float32
    np.testing.assert_allclose(ours[0], ref(img).numpy(), atol=1e-5)
    squash = preprocessing_for("smt_l", 384).load(asset("coffee.png"))
    ref384 = T.Compose([T.Resize((384, 384), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(img)
    np.testing.assert_allclose(squash[0], ref384.numpy(), atol=1e-5)


def test_validation_uses_it():
    spec = get_spec("acmix_resnet26")
    label, x = validation_inputs((2, 3, 224, 224), spec, random_inputs=0)[0]
    assert label == "chelsea.png" and x.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(x[:1], preprocessing_for(spec).load(asset("chelsea.png")))


def test_unreadable_image(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="cannot read image"):
        preprocessing_for("smt_t").load(bad)
