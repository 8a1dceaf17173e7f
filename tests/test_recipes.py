"""Recipes: every shipped recipe loads; bad YAML and bad fields are refused with their location."""
from __future__ import annotations

from pathlib import Path

import pytest

from hvit_deploy.errors import ConfigError
from hvit_deploy.recipes import load_recipe, load_recipe_file
from hvit_deploy.resources import recipes_dir


# the shipped families (the family files; a test module that imports tests/bench_models.py registers its own)
SHIPPED = sorted(p.stem for p in (Path(__file__).parents[1] / "hvit_deploy" / "models").glob("[!_]*.py"))


@pytest.mark.parametrize("family", SHIPPED)
def test_every_family_has_a_valid_recipe(family):
    recipe = load_recipe(family)
    assert recipe.family == family
    for backend in ("onnx", "openvino", "coreml"):
        assert isinstance(recipe.rewrites_for(backend), list)
        assert recipe.tolerance_for(backend).atol > 0


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_invalid_yaml_names_line_and_column(tmp_path):
    p = _write(tmp_path, "family: twins\nrewrites:\n  onnx: [explicit_attention\n")
    with pytest.raises(ConfigError, match=r"r\.yaml:\d+:\d+: invalid YAML"):
        load_recipe_file(p)


def test_unknown_field_is_located(tmp_path):
    p = _write(tmp_path, "family: twins\nonnx:\n  opset: 18\n  simplfy: true\n")
    with pytest.raises(ConfigError, match=r"onnx\.simplfy: Extra inputs are not permitted"):
        load_recipe_file(p)


def test_bad_value_is_located(tmp_path):
    p = _write(tmp_path, "family: twins\ntolerances:\n  default: {atol: -1}\n")
    with pytest.raises(ConfigError, match=r"tolerances\.default\.atol: Input should be greater than or equal to 0"):
        load_recipe_file(p)


def test_unknown_rewrite_is_located_with_suggestion(tmp_path):
    p = _write(tmp_path, "family: twins\nrewrites:\n  onnx: [explicit_attention, twins.static_shape]\n")
    with pytest.raises(ConfigError, match=r"rewrites\.onnx\[1\]: unknown rewrite 'twins\.static_shape'; did you mean twins\.static_shapes"):
        load_recipe_file(p)


def test_rewrite_of_another_family_is_refused(tmp_path):
    p = _write(tmp_path, "family: twins\nrewrites:\n  coreml: [crossvit.bicubic_as_matmul]\n")
    with pytest.raises(ConfigError, match="is for crossvit, not twins"):
        load_recipe_file(p)


def test_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="a recipe is a mapping"):
        load_recipe_file(_write(tmp_path, "- just\n- a list\n"))


def test_yaml_is_loaded_safely(tmp_path):
    p = _write(tmp_path, "family: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_recipe_file(p)


def test_recipes_dir_holds_the_shipped_files():
    assert {p.stem for p in recipes_dir().glob("*.yaml")} >= {"twins", "crossvit"}
