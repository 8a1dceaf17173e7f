"""The model registry: every variant by canonical name, its aliases, its input size and its official facts.

A family file registers its variants with :func:`register_model`::

    @register_model(family="smt", params=11_506_536, paper_name="SMT-T", aliases=("smt_tiny",))
    def smt_t(**kwargs):
        return SMT(**_CFGS["smt_t"], **kwargs)

The builder takes keyword arguments only and returns an ``nn.Module`` with freshly initialised weights.
Families of our own are registered in timm's registry too (``timm.create_model("smt_t")`` works once
``hvit_deploy`` is imported); Twins and CrossViT are timm's own models and only get our canonical names here.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch.nn as nn

from .errors import UnknownModelError

Builder = Callable[..., nn.Module]
StateDictHook = Callable[[dict], dict]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Builder
    input_size: tuple[int, int, int] = (3, 224, 224)
    params: int | None = None               # parameter count of the official code, checked by the tests
    paper_name: str = ""
    aliases: tuple[str, ...] = ()
    # other input sizes the variant was released for, e.g. SMT-L at 384 (passed to the builder as img_size)
    other_input_sizes: tuple[tuple[int, int, int], ...] = ()
    # when set, any square input whose side is a multiple of this also works (passed as img_size)
    input_multiple: int | None = None
    weights: str = ""                        # file name or URL of the official release, for the docs
    # state-dict keys that the model recomputes and which a checkpoint may or may not carry
    ignore_keys: tuple[str, ...] = ()
    remap_state_dict: StateDictHook | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    # evaluation transforms that differ at one of the other released sizes: (side, crop_pct, "shorter"|"squash"),
    # e.g. SMT-L at 384 is resized straight to 384x384 (see hvit_deploy/preprocess.py)
    eval_overrides: tuple[tuple[int, float, str], ...] = ()
    # the classifier head(s): module names whose ``.weight`` is (classes, features); the builder's ``num_classes``
    # sizes them, 0 replaces them by identities (pooled features). CrossViT has one head per branch.
    head_keys: tuple[str, ...] = ("head",)
    num_classes: int = 1000                  # the builder's default (ImageNet-1k releases)
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


_MODELS: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def _timm_entrypoint(spec_name: str, builder: Builder) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs):
        if pretrained:
            raise RuntimeError(
                f"{spec_name}: weights are not downloaded at run time; build it with "
                f"hvit_deploy.create_model({spec_name!r}, checkpoint=PATH)")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        return builder(**kwargs)

    entrypoint.__name__ = spec_name
    entrypoint.__qualname__ = spec_name
    entrypoint.__doc__ = builder.__doc__
    entrypoint.__module__ = builder.__module__
    return entrypoint


def register_model(*, family: str, timm_register: bool = True, name: str | None = None, **spec_fields: Any):
    """Decorator registering a builder under its function name (or ``name``), and in timm's registry under that
    name and each alias that timm does not already have."""

    def decorator(builder: Builder) -> Builder:
        spec = ModelSpec(name=name or builder.__name__, family=family, builder=builder, **spec_fields)
        add_spec(spec)
        if timm_register:
            from timm.models import is_model
            from timm.models import register_model as timm_register_model

            timm_register_model(_timm_entrypoint(spec.name, builder))
            for alias in spec.aliases:  # e.g. the official function names; never shadow a model of timm's own
                if alias != spec.name and not is_model(alias):
                    timm_register_model(_timm_entrypoint(alias, builder))
        return builder

    return decorator


def add_spec(spec: ModelSpec) -> None:
    if spec.name in _MODELS or spec.name in _ALIASES:
        raise ValueError(f"model name {spec.name!r} registered twice")
    _MODELS[spec.name] = spec
    for alias in spec.aliases:
        if alias == spec.name:
            continue
        if alias in _MODELS or _ALIASES.get(alias, spec.name) != spec.name:
            raise ValueError(f"alias {alias!r} of {spec.name!r} is already taken")
        _ALIASES[alias] = spec.name


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (imports every family file, which registers its variants)


def canonical_name(name: str) -> str:
    _ensure_loaded()
    key = name.strip()
    if key in _MODELS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    lowered = key.lower().replace("-", "_")
    for table in (_MODELS, _ALIASES):
        for candidate in table:
            if candidate.lower() == lowered:
                return _ALIASES.get(candidate, candidate)
    known = list(_MODELS) + list(_ALIASES)
    close = difflib.get_close_matches(lowered, known, n=3, cutoff=0.6)
    if not close:  # prefix match helps for "smt" or "efficientmod"
        close = [n for n in _MODELS if n.startswith(lowered)][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else "; run `hvit-export --list` to see the zoo"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def get_spec(name: str) -> ModelSpec:
    return _MODELS[canonical_name(name)]


def list_models(family: str | None = None) -> list[str]:
    """Canonical names of every registered variant, grouped by family in registration order."""
    _ensure_loaded()
    return [n for n, s in _MODELS.items() if family is None or s.family == family]


def list_families() -> list[str]:
    _ensure_loaded()
    return list(dict.fromkeys(s.family for s in _MODELS.values()))


def aliases() -> dict[str, str]:
    _ensure_loaded()
    return dict(_ALIASES)
