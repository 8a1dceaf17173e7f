"""``create_model``: a registered variant by name, optionally with official weights, in eval mode."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch.nn as nn

from .checkpoint import drop_head, head_classes, load_state_dict_into, read_state_dict
from .errors import CheckpointError, HvitError, HvitNotice
from .registry import ModelSpec, attach_pretrained_cfg, get_spec


def resolve_input_size(spec: ModelSpec, input_size=None, *, rectangular: bool = False) -> tuple[int, int, int]:
    """Normalise a user's input size (int, (H, W) or (C, H, W)) and check the variant supports it.
    ``rectangular``: also accept H != W when both are multiples of the variant's ``input_multiple`` (backbones at
    detection resolutions, e.g. 800x1344)."""
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
    if m and (size[1] == size[2] or rectangular) and size[1] % m == 0 and size[2] % m == 0:
        return size
    sides = ", ".join(str(s[1]) for s in allowed)
    extra = ""
    if m:
        extra = f" or any H x W with both sides multiples of {m}" if rectangular else f" or any multiple of {m}"
    raise HvitError(f"{spec.name} takes input size {sides}{extra}, not {size[1]}x{size[2]}")


def check_num_classes(num_classes) -> int | None:
    """``None`` (the default or the checkpoint's), or a class count >= 0 (0: no head, pooled features)."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise HvitError(f"num_classes must be a whole number >= 0 (0 exports pooled features), not {num_classes!r}")
    return num_classes


def create_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    input_size=None,
    num_classes: int | None = None,
    strict: bool = True,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    backbone: bool = False,
    **kwargs,
) -> nn.Module:
    """Build ``name`` (canonical name or alias) in eval mode.

    ``checkpoint``: path of an official release or fine-tuned file, loaded by its own key names (strict by default).
    ``input_size``: one of the variant's released sizes, e.g. ``384`` for ``smt_l``.
    ``num_classes``: the classifier's class count. By default it is read from the checkpoint's head (a fine-tuned
    file with 10 classes builds a 10-class model, with a :class:`~hvit_deploy.errors.HvitNotice` warning saying
    so), else the family's default (1000). ``0`` builds the model without its head (the output is the pooled
    features) and ignores the checkpoint's head; another value must match the checkpoint's head.
    ``trust_checkpoint``: allow arbitrary pickled objects in the file (runs their code; off by default).
    ``use_ema``: prefer the EMA weights when the file carries both.
    ``backbone``: build for feature extraction: no head (``num_classes`` 0 unless given), any H x W that are
    multiples of the variant's ``input_multiple``, and checkpoints from detection/segmentation repos load: keys
    under ``backbone.`` are taken (neck and decode-head keys dropped), and keys the model lacks (e.g. the extra
    per-stage norms of a detection backbone) are dropped with a notice; a missing key is still an error.
    Other keyword arguments go to the builder.
    """
    spec = get_spec(name)
    size = resolve_input_size(spec, input_size, rectangular=backbone)
    num_classes = check_num_classes(num_classes)
    if backbone and num_classes is None:
        num_classes = 0
    if size != spec.input_size:
        kwargs.setdefault("img_size", size[1] if size[1] == size[2] else (size[1], size[2]))
    state_dict = None
    if checkpoint is not None:
        state_dict = read_state_dict(checkpoint, trust=trust_checkpoint, use_ema=use_ema,
                                     remap=spec.remap_state_dict)
        source = Path(checkpoint).name
        if backbone:
            state_dict = _backbone_keys(state_dict, spec, source)
        found = head_classes(state_dict, spec.head_keys)
        if num_classes is None:
            if found is not None and found != spec.num_classes:
                warnings.warn(f"{spec.name}: {source} has a {found}-class head ({'/'.join(spec.head_keys)}), not "
                              f"{spec.num_classes}: building {spec.name} with {found} classes", HvitNotice,
                              stacklevel=2)
                num_classes = found
        elif num_classes == 0:
            state_dict = drop_head(state_dict, spec.head_keys)
        elif found is not None and found != num_classes:
            raise CheckpointError(f"{source} has a {found}-class head, not the {num_classes} classes asked for; "
                                  f"leave num_classes unset to use {found}, or pass 0 for pooled features")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = spec.builder(**kwargs)
    if state_dict is not None and backbone:
        own = model.state_dict()
        extra = [k for k in state_dict if k not in own and not k.endswith("num_batches_tracked")
                 and not any(k.endswith(s) for s in spec.ignore_keys)]
        if extra:
            warnings.warn(f"{spec.name}: {source}: ignoring {len(extra)} key(s) the backbone does not have "
                          f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})", HvitNotice, stacklevel=2)
            state_dict = {k: v for k, v in state_dict.items() if k not in set(extra)}
    if state_dict is not None:
        load_state_dict_into(model, state_dict, strict=strict, ignore_keys=spec.ignore_keys,
                             source=Path(checkpoint).name)
        for hook in (getattr(m, "after_load", None) for m in model.modules()):
            if callable(hook):  # modules that cache values derived from weights refresh them here
                hook()
    return _label(model.eval(), spec, size, spec.num_classes if num_classes is None else num_classes)


def _label(model: nn.Module, spec: ModelSpec, size: tuple[int, int, int], num_classes: int) -> nn.Module:
    """What the model is: its name, family, size and classes, and timm's ``pretrained_cfg`` at that size (the
    preprocessing ``timm.data.resolve_data_config(model=m)`` reads; over timm's own for Twins and CrossViT)."""
    model.hvit_name = spec.name
    model.hvit_family = spec.family
    model.hvit_input_size = size
    model.hvit_num_classes = num_classes
    return attach_pretrained_cfg(model, {**spec.pretrained_cfg(size), "architecture": spec.name})


def _backbone_keys(state_dict: dict, spec: ModelSpec, source: str) -> dict:
    """A detection/segmentation checkpoint's backbone: the ``backbone.`` keys, prefix stripped (after the
    family's own remap, which may have done it already); without such keys the dict is returned as it is."""
    if not any(k.startswith("backbone.") for k in state_dict):
        return state_dict
    kept = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    dropped = len(state_dict) - len(kept)
    if spec.remap_state_dict is not None:
        kept = spec.remap_state_dict(kept)
    if dropped:
        warnings.warn(f"{spec.name}: {source}: loading the backbone.* keys, {dropped} other key(s) (neck, heads) "
                      f"dropped", HvitNotice, stacklevel=3)
    return kept
