"""Export recipes: per-family YAML in ``export_recipes/`` naming input size, opset, rewrites and tolerances.

A recipe is checked field by field when it is loaded; a bad field is refused with its location
(``export_recipes/smt.yaml: rewrites.onnx[2]: unknown rewrite 'smt.foo'``).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import ConfigError, RewriteError
from .resources import recipes_dir
from .rewrites.base import get_rewrite
from .utils.io import load_yaml, parse_strict

# recipes are keyed by export format (what an exporter writes), never by runtime (what runs it)
Format = Literal["onnx", "openvino", "coreml"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tolerance(_Strict):
    """An export validates when every figure is within these bounds on every validation input."""

    atol: float = Field(1e-4, ge=0, description="max |eager - export| allowed, plus rtol * max |eager|")
    rtol: float = Field(1e-3, ge=0)
    min_cosine: float = Field(0.9999, ge=-1, le=1)
    min_top1: float = Field(1.0, ge=0, le=1, description="fraction of inputs whose top-1 class agrees")
    min_top5: float = Field(0.8, ge=0, le=1, description="mean overlap of the top-5 sets")


class OnnxOptions(_Strict):
    opset: int = Field(18, ge=11, le=23)
    exporters: list[Literal["torchscript", "dynamo"]] = ["torchscript", "dynamo"]
    simplify: bool = True


class OpenVinoOptions(_Strict):
    precision: Literal["fp32", "fp16"] = "fp32"


class CoremlOptions(_Strict):
    precision: Literal["fp32", "fp16"] = "fp32"
    minimum_deployment_target: Literal["macOS13", "macOS14", "macOS15", "iOS16", "iOS17", "iOS18"] = "iOS16"
    capture: list[Literal["export", "trace"]] = ["export", "trace"]


class ValidationOptions(_Strict):
    random_inputs: int = Field(3, ge=0, le=64)
    seed: int = 0
    real_image: bool = True


class VariantOverride(_Strict):
    input_size: Optional[tuple[int, int, int]] = None
    rewrites: dict[Format, list[str]] = {}
    tolerances: dict[str, Tolerance] = {}


class Recipe(_Strict):
    family: str
    description: str = ""
    batch_size: int = Field(1, ge=1)
    onnx: OnnxOptions = OnnxOptions()
    openvino: OpenVinoOptions = OpenVinoOptions()
    coreml: CoremlOptions = CoremlOptions()
    validation: ValidationOptions = ValidationOptions()
    rewrites: dict[Format, list[str]] = {}
    tolerances: dict[str, Tolerance] = {}
    variants: dict[str, VariantOverride] = {}
    source: str = Field("", exclude=True)

    @field_validator("tolerances")
    @classmethod
    def _tolerance_keys(cls, v: dict[str, Tolerance]) -> dict[str, Tolerance]:
        allowed = {"default", "onnx", "openvino", "coreml", "openvino_fp16", "coreml_fp16"}
        bad = sorted(set(v) - allowed)
        if bad:
            raise ValueError(f"unknown tolerance key(s) {bad}; allowed: {sorted(allowed)}")
        return v

    def rewrites_for(self, fmt: str, model_name: str | None = None) -> list[str]:
        override = self.variants.get(model_name or "")
        if override and fmt in override.rewrites:
            return list(override.rewrites[fmt])
        return list(self.rewrites.get(fmt, []))

    def tolerance_for(self, fmt: str, precision: str = "fp32", model_name: str | None = None) -> Tolerance:
        keys = ([f"{fmt}_{precision}"] if precision != "fp32" else []) + [fmt, "default"]
        override = self.variants.get(model_name or "")
        for table in ((override.tolerances if override else {}), self.tolerances):
            for k in keys:
                if k in table:
                    return table[k]
        return Tolerance()

    def input_size_for(self, model_name: str) -> tuple[int, int, int] | None:
        override = self.variants.get(model_name)
        return tuple(override.input_size) if override and override.input_size else None


def parse_recipe(data, source: str) -> Recipe:
    recipe = parse_strict(Recipe, data, source, "a recipe")
    _check_rewrite_names(recipe, source)
    return recipe


def _check_rewrite_names(recipe: Recipe, source: str) -> None:
    tables = [("rewrites", recipe.rewrites)] + [
        (f"variants.{name}.rewrites", v.rewrites) for name, v in recipe.variants.items()]
    for where, table in tables:
        for fmt, names in table.items():
            for i, name in enumerate(names):
                try:
                    rw = get_rewrite(name)
                except RewriteError as e:
                    raise ConfigError(f"{source}: {where}.{fmt}[{i}]: {e}") from None
                if fmt not in rw.formats:
                    raise ConfigError(f"{source}: {where}.{fmt}[{i}]: rewrite {name!r} is not meant for {fmt}")
                if rw.families and recipe.family not in rw.families:
                    raise ConfigError(f"{source}: {where}.{fmt}[{i}]: rewrite {name!r} is for "
                                      f"{', '.join(rw.families)}, not {recipe.family}")


def load_recipe_file(path: str | os.PathLike) -> Recipe:
    p = Path(path)
    return parse_recipe(load_yaml(p), _display(p))


@functools.lru_cache(maxsize=None)
def load_recipe(family: str) -> Recipe:
    path = recipes_dir() / f"{family}.yaml"
    if not path.exists():
        raise ConfigError(f"no export recipe for family {family!r} (looked for {path})")
    recipe = load_recipe_file(path)
    if recipe.family != family:
        raise ConfigError(f"{_display(path)}: family: says {recipe.family!r} but the file is for {family!r}")
    return recipe


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return f"{p.parent.name}/{p.name}"
