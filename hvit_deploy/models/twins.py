"""Twins-PCPVT and Twins-SVT (Chu et al., NeurIPS 2021), built from timm's faithful implementation.

timm's modules have the official key names and shapes (``docs/models.md`` "Twins → Checkpoints and key names"), so
official checkpoints load as they are. The official code scales q after ``q@kᵀ`` and timm before; the logits differ
by at most 4e-7 on the same weights.

| canonical        | timm name          | official fn      | embed dims         | depths       | heads      | params     |
|------------------|--------------------|------------------|--------------------|--------------|------------|------------|
| twins_pcpvt_s    | twins_pcpvt_small  | pcpvt_small_v0   | 64,128,320,512     | 3,4,6,3      | 1,2,5,8    | 24,106,216 |
| twins_pcpvt_b    | twins_pcpvt_base   | pcpvt_base_v0    | 64,128,320,512     | 3,4,18,3     | 1,2,5,8    | 43,828,456 |
| twins_pcpvt_l    | twins_pcpvt_large  | pcpvt_large_v0   | 64,128,320,512     | 3,8,27,3     | 1,2,5,8    | 60,989,672 |
| twins_svt_s      | twins_svt_small    | alt_gvt_small    | 64,128,256,512     | 2,2,10,4     | 2,4,8,16   | 24,060,776 |
| twins_svt_b      | twins_svt_base     | alt_gvt_base     | 96,192,384,768     | 2,2,18,2     | 3,6,12,24  | 56,070,952 |
| twins_svt_l      | twins_svt_large    | alt_gvt_large    | 128,256,512,1024   | 2,2,18,2     | 4,8,16,32  | 99,271,400 |
"""
from __future__ import annotations

import torch.nn as nn

from ..registry import ModelSpec, register_spec
from ._timm import timm_builder

_VARIANTS = [
    # canonical, timm name, official fn, paper name, params, release file
    ("twins_pcpvt_s", "twins_pcpvt_small", "pcpvt_small_v0", "Twins-PCPVT-S", 24_106_216, "pcpvt_small.pth"),
    ("twins_pcpvt_b", "twins_pcpvt_base", "pcpvt_base_v0", "Twins-PCPVT-B", 43_828_456, "pcpvt_base.pth"),
    ("twins_pcpvt_l", "twins_pcpvt_large", "pcpvt_large_v0", "Twins-PCPVT-L", 60_989_672, "pcpvt_large.pth"),
    ("twins_svt_s", "twins_svt_small", "alt_gvt_small", "Twins-SVT-S", 24_060_776, "alt_gvt_small.pth"),
    ("twins_svt_b", "twins_svt_base", "alt_gvt_base", "Twins-SVT-B", 56_070_952, "alt_gvt_base.pth"),
    ("twins_svt_l", "twins_svt_large", "alt_gvt_large", "Twins-SVT-L", 99_271_400, "alt_gvt_large.pth"),
]



def feature_stages(model: nn.Module) -> list[tuple[str, str]]:
    """The last block of ``blocks.i`` (the official detection code returns the stages un-normed; tokens)."""
    return [(f"blocks.{i}.{len(model.blocks[i]) - 1}", "tokens") for i in range(4)]


for _name, _timm, _official, _paper, _params, _file in _VARIANTS:
    register_spec(ModelSpec(
        name=_name, family="twins", builder=timm_builder(_timm), params=_params, paper_name=_paper,
        aliases=(_timm, _official), weights=_file, crop_pct=0.875,  # the official (DeiT) eval: 256/224; timm says 0.9
        # Patch embeddings need multiples of 32. SVT's local windows cover grids that are not multiples of 7 by
        # zero padding, as timm does (the official code has no padding and needs multiples of 224).
        input_multiple=32, feature_stages=feature_stages,
    ), timm_aliases=False, module=__name__)  # in timm under the canonical name, with the official crop
