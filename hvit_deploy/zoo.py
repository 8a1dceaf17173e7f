"""Facts of the zoo for ``hvit-export --list``: parameters and GMACs counted on the meta device (no memory,
no weights), so listing 40 models takes seconds."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .registry import get_spec, list_models


@dataclass
class ZooRow:
    name: str
    family: str
    paper_name: str
    params: int
    gmacs: float | None
    input_size: tuple[int, int, int]
    aliases: tuple[str, ...]


def count(name: str, input_size=None) -> tuple[int, float | None]:
    """(parameters, GMACs at batch 1) with explicit attention, as the papers count matmuls and convs."""
    spec = get_spec(name)
    size = tuple(input_size or spec.input_size)
    kwargs = {"img_size": size[1]} if size != spec.input_size else {}
    with torch.device("meta"):
        model = spec.builder(**kwargs)
    params = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    try:
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model.eval()(torch.empty((1,) + size, device="meta"))
        gmacs = fc.get_total_flops() / 2e9
    except Exception:  # a model whose forward cannot run on meta tensors still lists its parameters
        gmacs = None
    return params, gmacs


def zoo(family: str | None = None) -> list[ZooRow]:
    rows = []
    for name in list_models(family):
        spec = get_spec(name)
        params, gmacs = count(name)
        rows.append(ZooRow(name, spec.family, spec.paper_name, params, gmacs, spec.input_size, spec.aliases))
    return rows
