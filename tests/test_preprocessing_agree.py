"""One preprocessing record per (variant, input size): the evaluation transform, the artifact's metadata (and so
the manifest) and timm's pretrained_cfg say the same thing for every variant at every released size.

No model is built for the table-wide checks (the metadata and timm's registry are read from the specs); a few
models are built to check what ``timm.create_model`` and ``hvit_deploy.create_model`` attach.
"""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from hvit_deploy import create_model, get_spec, list_models
from hvit_deploy.formats.metadata import artifact_metadata, preprocessing_entry
from hvit_deploy.preprocess import preprocessing_for
from hvit_deploy.resources import asset

# the zoo's own variants (a test plugin may add toy models to the same table)
ZOO = [n for n in list_models() if get_spec(n).builder.__module__.startswith("hvit_deploy.models")]
RELEASED = [(n, size) for n in ZOO for size in get_spec(n).released_sizes]
CROP_MODE = {"shorter": "center", "squash": "squash"}  # our resize mode -> timm's crop_mode


def _timm_view(pre) -> dict:
    """What timm's resolve_data_config must return for the record ``pre``."""
    return {"input_size": (3, *pre.size), "interpolation": pre.interpolation, "mean": tuple(pre.mean),
            "std": tuple(pre.std), "crop_pct": pre.crop_pct, "crop_mode": CROP_MODE[pre.resize]}


def _timm_arch(name: str, size) -> str:
    """timm's name for the variant at a released size: the canonical name, tagged with the side when it is not
    the default size (``smt_l.384``)."""
    return name if tuple(size) == get_spec(name).input_size else f"{name}.{size[1]}"


def test_every_variant_has_its_released_sizes():
    assert len(ZOO) == 30 and ("smt_l", (3, 384, 384)) in RELEASED and ("crossvit_18_dagger_408", (3, 408, 408)) in RELEASED


@pytest.mark.parametrize("name,size", RELEASED, ids=[f"{n}@{s[1]}" for n, s in RELEASED])
def test_metadata_and_timm_say_what_the_evaluation_transform_does(name, size):
    spec = get_spec(name)
    pre = preprocessing_for(spec, size)
    for kind in ("normalized", "pixels"):
        meta = artifact_metadata(spec, input_shape=(1, *size), output_name="logits", num_classes=spec.num_classes,
                                 input_kind=kind)
        entry = preprocessing_entry(meta)
        assert entry["input_size"] == list(size)
        assert (entry["mean"], entry["std"]) == (list(pre.mean), list(pre.std))
        assert (entry["crop_pct"], entry["interpolation"]) == (pre.crop_pct, pre.interpolation)
        assert (entry["resize"], entry["resize_to"]) == (pre.resize, pre.resize_to)
        assert pre.describe() in meta["preprocessing"]
    # timm's registry (what timm.create_model attaches) and the spec's own cfg
    arch = _timm_arch(name, size)
    cfg = timm.models.get_pretrained_cfg(arch)
    ours = timm.models.model_entrypoint(arch.split(".")[0]).__module__.startswith("hvit_deploy.")
    assert cfg is not None and (not ours or not cfg.has_weights)  # ours: nothing to download
    assert ours or name == arch == cfg.architecture  # only a name that is timm's own is left to timm
    assert timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict()) == _timm_view(pre)
    assert timm.data.resolve_data_config(pretrained_cfg=spec.pretrained_cfg(size)) == _timm_view(pre)


def test_smt_l_at_384_is_squashed_everywhere():
    spec = get_spec("smt_l")
    meta = artifact_metadata(spec, input_shape=(1, 3, 384, 384), output_name="logits", num_classes=1000)
    assert (meta["resize"], meta["resize_to"], meta["crop_pct"]) == ("squash", "384", "1.0")
    assert meta["preprocessing"].startswith("RGB; resize to 384x384 (bicubic), no crop;")
    at224 = artifact_metadata(spec, input_shape=(1, 3, 224, 224), output_name="logits", num_classes=1000)
    assert (at224["resize"], at224["resize_to"], at224["crop_pct"]) == ("shorter", "256", "0.875")
    with torch.device("meta"):
        m = create_model("smt_l", input_size=384)
    assert timm.data.resolve_model_data_config(m)["crop_mode"] == "squash"


@pytest.mark.parametrize("name,timm_name,size", [
    ("smt_t", "smt_t", (3, 224, 224)),
    ("smt_l", "smt_l.384", (3, 384, 384)),
    ("twins_pcpvt_s", "twins_pcpvt_s", (3, 224, 224)),       # timm's own twins_pcpvt_small says crop 0.9
    ("crossvit_ti", "crossvit_ti", (3, 240, 240)),
    ("crossvit_15_dagger_408", "crossvit_15_dagger_408", (3, 408, 408)),  # timm's own name and cfg
])
def test_timm_create_model_resolves_our_preprocessing(name, timm_name, size):
    want = _timm_view(preprocessing_for(name, size))
    with torch.device("meta"):  # no memory, no weights: only the attached cfg is read
        m = timm.create_model(timm_name)
    assert timm.data.resolve_data_config(model=m) == want
    assert timm.data.resolve_model_data_config(m) == want
    assert hasattr(m, "forward_features")


def test_timm_img_size_picks_that_sizes_preprocessing():
    with torch.device("meta"):
        m = timm.create_model("smt_l", img_size=384)
    assert timm.data.resolve_model_data_config(m) == _timm_view(preprocessing_for("smt_l", 384))
    with pytest.raises(RuntimeError, match="weights are not downloaded"):
        timm.create_model("smt_t", pretrained=True)


def test_twins_keeps_the_official_crop_where_timm_says_0_9():
    ours = create_model("twins_pcpvt_s")
    assert timm.data.resolve_model_data_config(ours)["crop_pct"] == 0.875
    assert ours.pretrained_cfg["architecture"] == "twins_pcpvt_s" and "hf_hub_id" not in ours.pretrained_cfg
    with torch.device("meta"):
        assert "hf_hub_id" not in timm.create_model("twins_svt_s").pretrained_cfg  # nothing to download
    assert timm.models.get_pretrained_cfg("twins_pcpvt_small").crop_pct == 0.9  # timm's own name is left alone


@pytest.mark.parametrize("name,size", [("smt_t", 224), ("smt_l", 384), ("crossvit_ti", 240)])
def test_timm_transform_gives_the_same_pixels(name, size):
    """timm's own eval transform, built from the resolved config, turns a photo into the same tensor."""
    pre = preprocessing_for(name, size)
    cfg = get_spec(name).pretrained_cfg((3, size, size))
    transform = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=cfg))
    with Image.open(asset("coffee.png")) as img:
        img.load()
        ours = pre.image(img)
        theirs = transform(img.convert("RGB")).numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
