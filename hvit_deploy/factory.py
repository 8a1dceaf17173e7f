"""``create_model``: a registered variant by name, optionally with official weights, in eval mode."""
from __future__ import annotations

import os

import torch.nn as nn

from .checkpoint import load_checkpoint
from .errors import HvitError
from .registry import ModelSpec, get_spec


def resolve_input_size(spec: ModelSpec, input_size=None) -> tuple[int, int, int]:
    """Normalise a user's input size (int, (H, W) or (C, H, W)) and check the variant supports it."""
    if input_size is None:
        return spec.input_size
    if isinstance(input_size, int):
        size = (spec.input_size[0], input_size, input_size)
    else:
        size = tuple(int(v) for v in input_size)
        if len(size) == 2:
            size = (spec.input_size[0],) + size
    if len(size) != 3 or size[0] != spec.input_size[0]:
        raise HvitError(f"{spec.name}: input size {input_size} is not (C, H, W) with C={spec.input_size[0]}")
    allowed = (spec.input_size,) + tuple(spec.other_input_sizes)
    if size in allowed:
        return size
    m = spec.input_multiple
    if m and size[1] == size[2] and size[1] % m == 0:
        return size
    sides = ", ".join(str(s[1]) for s in allowed)
    extra = f" or any multiple of {m}" if m else ""
    raise HvitError(f"{spec.name} takes input size {sides}{extra}, not {size[1]}x{size[2]}")


def create_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    input_size=None,
    strict: bool = True,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    **kwargs,
) -> nn.Module:
    """Build ``name`` (canonical name or alias) in eval mode.

    ``checkpoint``: path of an official release file, loaded by its own key names (strict by default).
    ``input_size``: one of the variant's released sizes, e.g. ``384`` for ``smt_l``.
    ``trust_checkpoint``: allow arbitrary pickled objects in the file (runs their code; off by default).
    ``use_ema``: prefer the EMA weights when the file carries both.
    Other keyword arguments go to the builder (e.g. ``num_classes``).
    """
    spec = get_spec(name)
    size = resolve_input_size(spec, input_size)
    if size != spec.input_size:
        kwargs.setdefault("img_size", size[1])
    model = spec.builder(**kwargs)
    if checkpoint is not None:
        load_checkpoint(
            model, checkpoint, strict=strict, trust=trust_checkpoint, use_ema=use_ema,
            remap=spec.remap_state_dict, ignore_keys=spec.ignore_keys,
        )
        for hook in (getattr(m, "after_load", None) for m in model.modules()):
            if callable(hook):  # modules that cache values derived from weights refresh them here
                hook()
    model.eval()
    model.hvit_name = spec.name
    model.hvit_family = spec.family
    model.hvit_input_size = size
    return model
