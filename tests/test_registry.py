"""The registry and the stable Python API: names, aliases, suggestions, parameter counts."""
from __future__ import annotations

import pytest
import torch

import hvit_deploy
from hvit_deploy import HvitError, create_model, get_spec, list_models
from hvit_deploy.registry import canonical_name
from hvit_deploy.zoo import count

TWINS_CROSSVIT = {
    "twins_pcpvt_s": 24_106_216, "twins_pcpvt_b": 43_828_456, "twins_pcpvt_l": 60_989_672,
    "twins_svt_s": 24_060_776, "twins_svt_b": 56_070_952, "twins_svt_l": 99_271_400,
    "crossvit_ti": 7_014_800, "crossvit_s": 26_856_272, "crossvit_b": 105_025_232, "crossvit_9": 8_553_296,
    "crossvit_15": 27_528_464, "crossvit_18": 43_271_408, "crossvit_9_dagger": 8_776_592,
    "crossvit_15_dagger": 28_209_008, "crossvit_18_dagger": 44_266_976,
    "crossvit_15_dagger_408": 28_500_080, "crossvit_18_dagger_408": 44_606_560,
}
# GMACs at the released input with explicit attention (docs/models.md "Twins → Variants", "CrossViT → Variants")
GMACS = {"twins_pcpvt_s": 3.809, "twins_svt_s": 2.927, "twins_svt_l": 15.112, "crossvit_ti": 1.563,
         "crossvit_18_dagger_408": 32.409}


def test_canonical_names_listed():
    names = list_models()
    for n in TWINS_CROSSVIT:
        assert n in names
    assert len(names) == len(set(names))
    assert set(list_models("twins")) == {n for n in TWINS_CROSSVIT if n.startswith("twins")}


@pytest.mark.parametrize("name,params", sorted(TWINS_CROSSVIT.items()))
def test_parameter_counts_match_official(name, params):
    assert count(name)[0] == params == get_spec(name).params


@pytest.mark.parametrize("name,gmacs", sorted(GMACS.items()))
def test_gmacs_match_reference(name, gmacs):
    assert count(name)[1] == pytest.approx(gmacs, abs=0.0015)


@pytest.mark.parametrize("alias,canonical", [
    ("twins_svt_small", "twins_svt_s"), ("alt_gvt_large", "twins_svt_l"), ("pcpvt_base_v0", "twins_pcpvt_b"),
    ("crossvit_9_dagger_240", "crossvit_9_dagger"), ("crossvit_tiny_224", "crossvit_ti"),
    ("crossvit_18_dagger_384", "crossvit_18_dagger_408"), ("Twins-SVT-S", "twins_svt_s"),
])
def test_aliases_resolve(alias, canonical):
    assert canonical_name(alias) == canonical


def test_unknown_model_suggests_close_names():
    with pytest.raises(HvitError) as e:
        create_model("twins_svt_smal")
    msg = str(e.value)
    assert "unknown model 'twins_svt_smal'" in msg and "twins_svt_s" in msg and "\n" not in msg


def test_create_model_eval_mode_and_attributes():
    m = create_model("crossvit_ti")
    assert not m.training
    assert (m.hvit_name, m.hvit_family, m.hvit_input_size) == ("crossvit_ti", "crossvit", (3, 240, 240))
    with torch.no_grad():
        assert m(torch.randn(1, 3, 240, 240)).shape == (1, 1000)


def test_input_size_checked():
    with pytest.raises(HvitError, match="takes input size 240"):
        create_model("crossvit_ti", input_size=224)
    assert create_model("twins_pcpvt_s", input_size=256).hvit_input_size == (3, 256, 256)


def test_public_api_names_are_stable():
    for name in ("list_models", "create_model", "rewrite", "__version__"):
        assert hasattr(hvit_deploy, name)


def test_unknown_model_without_close_names_points_to_the_list():
    with pytest.raises(HvitError) as e:
        canonical_name("qqqq")
    assert str(e.value) == "unknown model 'qqqq'; run `hvit-export --list` to see the zoo"


def test_model_table_is_a_registry_found_by_module_name():
    from hvit_deploy.registry import MODELS, aliases, list_families
    from hvit_deploy.utils.registry import Registry

    assert isinstance(MODELS, Registry) and MODELS.names() == list_models()
    shipped = [f for f in list_families()  # a --plugin run earlier in this process may have added its own
               if all(s.builder.__module__.startswith("hvit_deploy.models.") for s in MODELS.values() if s.family == f)]
    assert shipped == ["acmix", "crossvit", "efficientmod", "smt", "twins"]  # family files, sorted
    assert aliases()["smt_tiny"] == "smt_t" and "smt_t" in MODELS and "smt_tt" not in MODELS


def test_families_declare_their_feature_stages():
    from hvit_deploy.export.features import feature_families

    assert feature_families() == ["acmix", "efficientmod", "smt", "twins"]
    assert all(get_spec(n).feature_stages is None for n in list_models("crossvit"))
    m = create_model("acmix_resnet26")
    assert get_spec("acmix_resnet26").feature_stages(m) == [(f"layer{i}", "nchw") for i in range(1, 5)]


def test_a_squash_override_must_resize_to_the_side():
    import dataclasses

    spec = dataclasses.replace(get_spec("smt_t"), eval_overrides=((224, 0.9, "squash"),))
    with pytest.raises(ValueError, match="a squash resizes to the side"):
        spec.eval_crop(224, 224)
    assert get_spec("smt_l").eval_crop(384, 384) == (1.0, "squash")
    assert get_spec("smt_l").eval_crop(224, 224) == (0.875, "shorter")
