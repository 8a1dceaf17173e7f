"""CrossViT (Chen et al., ICCV 2021), built from timm's faithful implementation.

The official ``..._224`` models take a 240x240 image: branch 0 (patch 12) uses it as is, branch 1 (patch 16)
gets a bicubic resize to 224. timm therefore names them ``..._240`` (and ``..._408`` for the 384 models).
Official releases are bare state dicts whose ``pos_embed.N``/``cls_token.N`` keys become ``pos_embed_N`` here.

| canonical              | timm name              | official fn            | input | dims (S,L) | heads | M | params      |
|------------------------|------------------------|------------------------|-------|------------|-------|---|-------------|
| crossvit_ti            | crossvit_tiny_240      | crossvit_tiny_224      | 240   | 96, 192    | 3     | 4 | 7,014,800   |
| crossvit_s             | crossvit_small_240     | crossvit_small_224     | 240   | 192, 384   | 6     | 4 | 26,856,272  |
| crossvit_b             | crossvit_base_240      | crossvit_base_224      | 240   | 384, 768   | 12    | 4 | 105,025,232 |
| crossvit_9             | crossvit_9_240         | crossvit_9_224         | 240   | 128, 256   | 4     | 3 | 8,553,296   |
| crossvit_15            | crossvit_15_240        | crossvit_15_224        | 240   | 192, 384   | 6     | 5 | 27,528,464  |
| crossvit_18            | crossvit_18_240        | crossvit_18_224        | 240   | 224, 448   | 7     | 6 | 43,271,408  |
| crossvit_9_dagger      | crossvit_9_dagger_240  | crossvit_9_dagger_224  | 240   | 128, 256   | 4     | 3 | 8,776,592   |
| crossvit_15_dagger     | crossvit_15_dagger_240 | crossvit_15_dagger_224 | 240   | 192, 384   | 6     | 5 | 28,209,008  |
| crossvit_18_dagger     | crossvit_18_dagger_240 | crossvit_18_dagger_224 | 240   | 224, 448   | 7     | 6 | 44,266,976  |
| crossvit_15_dagger_408 | crossvit_15_dagger_408 | crossvit_15_dagger_384 | 408   | 192, 384   | 6     | 5 | 28,500,080  |
| crossvit_18_dagger_408 | crossvit_18_dagger_408 | crossvit_18_dagger_384 | 408   | 224, 448   | 7     | 6 | 44,606,560  |
"""
from __future__ import annotations

import re

from ..registry import ModelSpec, register_spec
from ._timm import timm_builder

_VARIANTS = [
    # canonical, timm name, official fn, paper name, params
    ("crossvit_ti", "crossvit_tiny_240", "crossvit_tiny_224", "CrossViT-Ti", 7_014_800),
    ("crossvit_s", "crossvit_small_240", "crossvit_small_224", "CrossViT-S", 26_856_272),
    ("crossvit_b", "crossvit_base_240", "crossvit_base_224", "CrossViT-B", 105_025_232),
    ("crossvit_9", "crossvit_9_240", "crossvit_9_224", "CrossViT-9", 8_553_296),
    ("crossvit_15", "crossvit_15_240", "crossvit_15_224", "CrossViT-15", 27_528_464),
    ("crossvit_18", "crossvit_18_240", "crossvit_18_224", "CrossViT-18", 43_271_408),
    ("crossvit_9_dagger", "crossvit_9_dagger_240", "crossvit_9_dagger_224", "CrossViT-9†", 8_776_592),
    ("crossvit_15_dagger", "crossvit_15_dagger_240", "crossvit_15_dagger_224", "CrossViT-15†", 28_209_008),
    ("crossvit_18_dagger", "crossvit_18_dagger_240", "crossvit_18_dagger_224", "CrossViT-18†", 44_266_976),
    ("crossvit_15_dagger_408", "crossvit_15_dagger_408", "crossvit_15_dagger_384", "CrossViT-15†@384", 28_500_080),
    ("crossvit_18_dagger_408", "crossvit_18_dagger_408", "crossvit_18_dagger_384", "CrossViT-18†@384", 44_606_560),
]

_LIST_KEY = re.compile(r"^(pos_embed|cls_token)\.(\d+)$")


def remap_official_keys(state_dict: dict) -> dict:
    """Official ParameterList keys ``pos_embed.0``/``cls_token.1`` → timm's ``pos_embed_0``/``cls_token_1``."""
    return {_LIST_KEY.sub(r"\1_\2", k): v for k, v in state_dict.items()}



for _name, _timm, _official, _paper, _params in _VARIANTS:
    _side = 408 if _timm.endswith("_408") else 240
    register_spec(ModelSpec(
        name=_name, family="crossvit", builder=timm_builder(_timm), params=_params, paper_name=_paper,
        aliases=(_timm, _official), input_size=(3, _side, _side), weights=f"{_official}.pth",
        remap_state_dict=remap_official_keys, crop_pct=0.875 if _side == 240 else 1.0,
        head_keys=("head.0", "head.1"),  # two token branches and no pyramid: no feature_stages
    ), timm_aliases=False, module=__name__)  # in timm under the canonical name
