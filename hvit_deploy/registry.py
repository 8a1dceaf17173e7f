"""The model registry: every variant by canonical name, its aliases, its input size and its official facts.

A family file registers its variants with :func:`register_model`::

    @register_model(family="smt", params=11_506_536, paper_name="SMT-T", aliases=("smt_tiny",))
    def smt_t(**kwargs):
        return SMT(**_CFGS["smt_t"], **kwargs)

The builder takes keyword arguments only and returns an ``nn.Module`` with freshly initialised weights.
Every variant is registered in timm's registry too, with its ``pretrained_cfg`` (``timm.create_model("smt_t")``
works once ``hvit_deploy`` is imported, and ``timm.data.resolve_data_config(model=m)`` gives our preprocessing);
Twins and CrossViT are timm's own models and get only our canonical names there (``twins_svt_s``, whose cfg says
the official crop 0.875 where timm's ``twins_svt_small`` says 0.9).

The table is a :class:`hvit_deploy.utils.registry.Registry` that finds the family files by module name
(``hvit_deploy.models``): this module never imports the modules that fill it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # the registry is read without torch (hvit-bench's workers start without it)
    import torch.nn as nn

from .errors import UnknownModelError
from .utils.registry import Registry

Builder = Callable[..., "nn.Module"]
StateDictHook = Callable[[dict], dict]
# the modules whose outputs are a backbone's four stages, for a built model: [(module name, layout)], layout
# "nchw", "nhwc" or "tokens" (B, N, C); see hvit_deploy/export/features.py
FeatureStages = Callable[["nn.Module"], list[tuple[str, str]]]


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
    # the backbone's stage modules (``--features``); None: no feature pyramid (e.g. CrossViT's two branches)
    feature_stages: FeatureStages | None = None

    @property
    def released_sizes(self) -> tuple[tuple[int, int, int], ...]:
        return (tuple(self.input_size),) + tuple(tuple(s) for s in self.other_input_sizes)

    def eval_crop(self, h: int, w: int) -> tuple[float, str]:
        """(crop_pct, resize) of the evaluation transform at ``h x w``: the variant's own, or the
        ``eval_overrides`` entry of that side; resize is "shorter" (resize the shorter side to side / crop_pct,
        centre crop) or "squash" (resize straight to h x w). :func:`hvit_deploy.preprocess.preprocessing_for`
        turns this into the full record."""
        crop_pct, resize = self.crop_pct, "shorter"
        for side, pct, mode in self.eval_overrides:
            if side == h == w:
                crop_pct, resize = pct, mode
        if resize not in ("shorter", "squash") or (resize == "squash" and crop_pct != 1.0):
            raise ValueError(f"{self.name}: an eval override is (side, crop_pct, 'shorter' | 'squash'), and a "
                             f"squash resizes to the side (crop_pct 1.0), not {(crop_pct, resize)}")
        return float(crop_pct), resize

    def pretrained_cfg(self, size: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """timm's ``pretrained_cfg`` at ``size`` (default: the variant's own), the same preprocessing as the
        evaluation transform: timm's "center" crop mode is our "shorter", its "squash" ours (at crop_pct 1.0).
        No weight location: timm never downloads."""
        c, h, w = tuple(size or self.input_size)
        crop_pct, resize = self.eval_crop(h, w)
        return dict(input_size=(c, h, w), mean=tuple(self.mean), std=tuple(self.std), crop_pct=crop_pct,
                    interpolation=self.interpolation, crop_mode="squash" if resize == "squash" else "center",
                    num_classes=self.num_classes, paper_name=self.paper_name or None,
                    classifier=self.head_keys[0] if len(self.head_keys) == 1 else tuple(self.head_keys))


MODELS: Registry[ModelSpec] = Registry(
    "model", discover="hvit_deploy.models", error=UnknownModelError, suggest_aliases=True,
    hint="run `hvit-export --list` to see the zoo")
_MODELS = MODELS._items  # the table by canonical name, read by older plugins (tests/bench_models.py); use MODELS


def _timm_entrypoint(spec: ModelSpec, arch: str) -> Callable[..., nn.Module]:
    """timm's entrypoint for ``arch`` (the canonical name or an alias): builds ``spec`` and attaches the
    ``pretrained_cfg`` that timm's data helpers read (``timm.data.resolve_data_config(model=m)``)."""

    def entrypoint(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None,
                   **kwargs):
        if pretrained:
            raise RuntimeError(
                f"{arch}: weights are not downloaded at run time; build it with "
                f"hvit_deploy.create_model({spec.name!r}, checkpoint=PATH)")
        size = _size_of(spec, kwargs.get("img_size"))
        if size is not None and pretrained_cfg is None:  # an explicit size picks that size's preprocessing
            pretrained_cfg = {**spec.pretrained_cfg(size), "architecture": arch}
        from timm.models import resolve_pretrained_cfg  # timm is imported when a variant is registered, not with the package
        cfg = resolve_pretrained_cfg(arch, pretrained_cfg, pretrained_cfg_overlay).to_dict()
        if size is None and tuple(cfg["input_size"]) != spec.input_size:  # a tag such as "smt_l.384"
            kwargs["img_size"] = int(cfg["input_size"][-1])
        return attach_pretrained_cfg(spec.builder(**kwargs), cfg)

    entrypoint.__name__ = entrypoint.__qualname__ = arch
    entrypoint.__doc__ = spec.builder.__doc__
    return entrypoint


_WEIGHT_SOURCES = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source")


def attach_pretrained_cfg(model: nn.Module, cfg: dict[str, Any]) -> nn.Module:
    """Set timm's ``pretrained_cfg`` (and its old name ``default_cfg``) on ``model``: ``cfg`` over what timm's own
    builder set (Twins, CrossViT), less any weight location, so nothing downloads."""
    base = {k: v for k, v in (getattr(model, "pretrained_cfg", None) or {}).items() if k not in _WEIGHT_SOURCES}
    model.pretrained_cfg = model.default_cfg = {**base, **cfg}
    return model


def _size_of(spec: ModelSpec, img_size) -> tuple[int, int, int] | None:
    if img_size is None:
        return None
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)[-2:]
    return (spec.input_size[0], int(h), int(w))


def timm_default_cfgs(spec: ModelSpec, arch: str) -> dict:
    """timm's ``default_cfgs`` entries of ``arch``: the released size untagged (the default) and each other
    released size under the tag of its side (``smt_l.384``); no weight location, so timm never downloads."""
    cfgs = {arch: spec.pretrained_cfg()}
    for size in spec.other_input_sizes:
        cfgs[f"{arch}.{size[1]}" if size[1] == size[2] else f"{arch}.{size[1]}x{size[2]}"] = spec.pretrained_cfg(size)
    from timm.models import generate_default_cfgs
    return generate_default_cfgs(cfgs)


def register_in_timm(spec: ModelSpec, *, module: str | None = None, aliases: bool = True) -> None:
    """Register ``spec`` in timm's registry under its canonical name and (when ``aliases``) each alias, except
    names timm already has (e.g. ``crossvit_15_dagger_408``, timm's own), with its ``pretrained_cfg``, the way
    timm's own model files do: a module-level ``default_cfgs`` that ``timm.models.register_model`` reads.
    ``module``: the family file (default: the builder's)."""
    module = module or spec.builder.__module__
    table = sys.modules[module].__dict__.setdefault("default_cfgs", {})
    names = [spec.name] + [a for a in spec.aliases if a != spec.name] if aliases else [spec.name]
    from timm.models import is_model, register_model as timm_register_model
    for arch in [n for n in names if not is_model(n)]:  # never shadow a model of timm's own (its cfg stands)
        table.update(timm_default_cfgs(spec, arch))
        entrypoint = _timm_entrypoint(spec, arch)
        entrypoint.__module__ = module
        timm_register_model(entrypoint)


def register_spec(spec: ModelSpec, *, timm_register: bool = True, timm_aliases: bool = True,
                  module: str | None = None) -> ModelSpec:
    """Add ``spec`` to the zoo and (by default) to timm's registry (see :func:`register_in_timm`)."""
    add_spec(spec)
    if timm_register:
        register_in_timm(spec, module=module, aliases=timm_aliases)
    return spec


def register_model(*, family: str, timm_register: bool = True, name: str | None = None, **spec_fields: Any):
    """Decorator registering a builder under its function name (or ``name``), and in timm's registry under that
    name and each alias that timm does not already have."""

    def decorator(builder: Builder) -> Builder:
        register_spec(ModelSpec(name=name or builder.__name__, family=family, builder=builder, **spec_fields),
                      timm_register=timm_register)
        return builder

    return decorator


def add_spec(spec: ModelSpec) -> None:
    MODELS.add(spec.name, spec, aliases=spec.aliases)


def canonical_name(name: str) -> str:
    return MODELS.canonical(name)


def get_spec(name: str) -> ModelSpec:
    return MODELS.get(name)


def list_models(family: str | None = None) -> list[str]:
    """Canonical names of every registered variant, grouped by family in registration order."""
    return [n for n, s in MODELS.items() if family is None or s.family == family]


def list_families() -> list[str]:
    return list(dict.fromkeys(s.family for s in MODELS.values()))


def aliases() -> dict[str, str]:
    return MODELS.aliases()
