"""Export recipes: per-family YAML in ``export_recipes/`` naming input size, opset, rewrites and tolerances.

A recipe is checked field by field when it is loaded; a bad field is refused with its location
(``export_recipes/smt.yaml: rewrites.onnx[2]: unknown rewrite 'smt.foo'``).
"""
from __future__ import annotations

import functools
import os
import re
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


class QuantGate(_Strict):
    """When an INT8 artifact is good enough, measured on held-out images (never the calibration ones) against
    eager FP32. The defaults are the usual bar for post-training INT8 of ImageNet classifiers: a good calibration
    flips well under 1 % of top-1 predictions and costs under 1 point of accuracy (NNCF's accuracy-control
    default max_drop is 0.01 too); logits that keep a mean cosine of 0.99 have kept their ranking. With few
    held-out images one flip moves the agreement by a lot, so small test sets override these in their recipe."""

    min_top1_agreement: float = Field(0.99, ge=0, le=1, description="fraction of images with the same top-1 class")
    min_top5_agreement: float = Field(0.95, ge=0, le=1, description="mean overlap of the top-5 sets")
    min_mean_cosine: float = Field(0.99, ge=-1, le=1, description="mean cosine similarity of the logits")
    max_accuracy_drop: float = Field(0.01, ge=0, le=1, description="eager top-1 minus artifact top-1, labelled data")
    min_images: int = Field(1, ge=1, description="refuse to judge on fewer held-out images than this")
    tie_logit_margin: float = Field(0.05, ge=0, description="agreement counts a pick that eager FP32 scores within "
                                    "this many logits of its own (a near tie, see hvit_deploy/quantize/gate.py); 0: "
                                    "strict arg-max agreement")


class QuantFallback(_Strict):
    """Per-layer fallback when the gate fails: the layers whose quantization harms the logits most (measured one at
    a time on a few held-out images) stay in floating point, more each try, until the gate passes."""

    enabled: bool = True
    max_layers: int = Field(8, ge=1, description="at most this many layers kept in floating point")
    max_tries: int = Field(4, ge=1, description="at most this many re-quantizations (1, 2, 4, ... layers)")
    sensitivity_images: int = Field(4, ge=1, le=64, description="held-out images used to rank the layers")
    candidates: int = Field(12, ge=1, description="layers measured end to end after a one-pass pre-ranking by "
                            "their local quantization error (each costs a forward pass per sensitivity image)")
    group_tries: int = Field(2, ge=0, description="when keeping single layers float does not pass: more "
                             "re-quantizations, each keeping the worst role groups float (layers named alike but "
                             "for their numbers: every block's q/k/v convs), the worst one, then two, ...; 0: off")


class QuantizationOptions(_Strict):
    """``--precision int8`` (and ``w4`` for Core ML weights)."""

    calibration_size: int = Field(300, ge=1, description="images used to calibrate (all there are, if fewer)")
    holdout_size: int = Field(50, ge=1, description="images split off the calibration folder for the gate "
                                                    "when no --eval-data is given")
    # OpenVINO (NNCF). MIXED: symmetric weights, asymmetric activations. Softmax and GELU outputs are one-sided,
    # so asymmetric activations keep a bit more resolution than PERFORMANCE's symmetric ones, and on CPUs the
    # zero point is folded into a precomputed compensation term, so it costs next to nothing there.
    preset: Literal["mixed", "performance"] = "mixed"
    model_type: Literal["transformer", "default"] = "transformer"
    # SmoothQuant alpha for MatMul inputs (NNCF applies it with model_type transformer); None keeps NNCF's default
    # (0.95), a negative value turns it off.
    smooth_quant_alpha: Optional[float] = None
    fast_bias_correction: bool = True
    # ONNX (ONNX Runtime's static quantizer, QDQ format)
    onnx_calibration: Literal["minmax", "percentile", "entropy"] = "minmax"
    onnx_per_channel: bool = True
    # ONNX Runtime's x86 kernels multiply unsigned 8-bit activations by signed 8-bit weights (U8S8) natively; with
    # signed activations (S8S8) EfficientMod-xxs ran 0.65x FP32 on a VNNI CPU, with unsigned 1.25x (1 thread,
    # interleaved in one process; see README, INT8)
    onnx_activations: Literal["uint8", "int8"] = "uint8"
    # 7-bit weights. Without VNNI, ONNX Runtime's x86 U8S8 kernels (AVX2 vpmaddubsw) add pairs of 8-bit products in
    # int16 and can saturate; ONNX Runtime's docs advise reduce_range there. On a Milan CPU (AVX2, no VNNI) full-range
    # weights took bench_tiny's INT8 gate to a mean cosine of 0.77. "auto": on x86 CPUs without VNNI only.
    onnx_reduce_range: Literal["auto", "on", "off"] = "auto"
    # NNCF's overflow fix (7-bit weights) for the same int16 saturation in OpenVINO's CPU kernels without VNNI. NNCF's
    # default fixes the first layer only; on the Milan CPU bench_tiny then kept 4 of its 5 layers in FP to pass the
    # gate. "auto": every layer on x86 CPUs without VNNI, NNCF's default elsewhere.
    openvino_overflow_fix: Literal["auto", "enable", "first_layer", "disable"] = "auto"
    onnx_pre_process: bool = True
    # Data-movement ops quantized as well as Conv/MatMul/Gemm (ONNX Runtime's quantizer gives them their input's
    # scale, and ONNX Runtime then moves uint8 through them instead of float32): worth it where layout work between
    # quantized ops is a large share of the time (ACmix-ResNet's halo attention: its INT8 went from 1.15x to 1.31x
    # FP32 with the gate figures unchanged). Off by default: measured on ACmix only.
    onnx_data_movement_ops: list[Literal["Transpose", "Reshape", "Concat", "Slice", "Pad", "Squeeze", "Unsqueeze",
                                         "Split", "Gather", "MaxPool", "Resize"]] = []
    # Elementwise ops quantized too: a Relu (or Clip) after a quantized op is folded into that op's output range (no
    # float round trip per activation), an Add or Mul between quantized tensors runs as QLinearAdd / QLinearMul. A
    # constant that is not a real range (ACmix's -1e9 window mask) must be kept float by onnx_nodes_to_exclude.
    # Off by default: measured on ACmix-ResNet only (its ReLUs and branch adds), where transformers' Add/Mul sit in
    # LayerNorm and GELU chains.
    onnx_elementwise_ops: list[Literal["Relu", "Clip", "Add", "Mul"]] = []
    # Which nodes of those types: regular expressions searched in the node's name (``re.search``); the others stay
    # float. A family recipe covers variants of other shapes (ACmix: Swin-ACmix, whose attention-mask adds and GELU
    # products failed the gate at a mean cosine of 0.53 when quantized); empty: every node of those types. A
    # graph whose node names carry no module path (the dynamo exporter's) then quantizes none of them.
    onnx_elementwise_scope: list[str] = []
    # With ``model_type: transformer`` the MatMul that multiplies the softmax's probabilities with the values stays
    # float (NNCF's attention-output pattern). These regular expressions (``re.search`` on the MatMul's name) pick
    # the ones quantized anyway: the probabilities then go to the MatMul as uint8 over [0, 1] and ONNX Runtime runs it
    # as a QLinearMatMul. ACmix-ResNet's halo attention (49 window positions per query): INT8 1.06x faster at 1
    # thread with the gate figures unchanged; Swin-ACmix gained nothing, so it is not in the recipe's scope.
    onnx_attention_output_int8: list[str] = []
    # Nodes the recipe keeps in floating point before any fallback, by regular expression (Python ``re.search``).
    # ONNX: searched in the name and input names of each node of a quantized op type (Conv/MatMul/Gemm and the
    # recipe's elementwise ops) (so a weight's initializer name, e.g.
    # ACmix's ``unfold_kernels``, picks its convolutions whichever exporter named the node). OpenVINO: NNCF
    # ``IgnoredScope`` patterns, matched from the start of a friendly name as NNCF does (``re.match``: start one with
    # ``.*``), and op types (e.g. ``Multiply``).
    onnx_nodes_to_exclude: list[str] = []
    openvino_ignored_patterns: list[str] = []
    openvino_ignored_types: list[str] = []
    # PT2E, per format (executorch, litert): modules kept in floating point, by regular expression matched in full
    # against the module path (``layer1.0.conv2.conv1``); their nodes are left out of the quantizer's annotation
    pt2e_modules_in_fp: dict[Literal["executorch", "litert"], list[str]] = {}
    # Core ML weight quantization
    coreml_granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    gate: QuantGate = QuantGate()
    fallback: QuantFallback = QuantFallback()

    @field_validator("onnx_nodes_to_exclude", "openvino_ignored_patterns", "onnx_elementwise_scope",
                     "onnx_attention_output_int8")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for pat in v:
            try:
                re.compile(pat)
            except re.error as e:
                raise ValueError(f"not a regular expression: {pat!r} ({e})") from None
        return v

    @field_validator("pt2e_modules_in_fp")
    @classmethod
    def _regex_table(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for pats in v.values():
            cls._regexes(pats)
        return v


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
    quantization: QuantizationOptions = QuantizationOptions()
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


def recipe_rewrites(model, fmt: str) -> list[str]:
    """The rewrites ``model``'s family recipe names for export format ``fmt`` (its variant's override first)."""
    family = getattr(model, "hvit_family", None)
    if family is None:
        raise RewriteError("model was not built by hvit_deploy.create_model; pass names=[...] of the rewrites")
    return load_recipe(family).rewrites_for(fmt, getattr(model, "hvit_name", None))


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


def has_recipe(family: str) -> bool:
    """Whether the family ships an export recipe (our five do; a family a --plugin registers may not)."""
    return (recipes_dir() / f"{family}.yaml").exists()


def recipe_or_default(family: str) -> Recipe:
    """The family's recipe, or for a family without one (a --plugin model) the default recipe: no rewrites,
    the default tolerances and quantization settings, so the model exports as written."""
    return load_recipe(family) if has_recipe(family) else Recipe(family=family)


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
