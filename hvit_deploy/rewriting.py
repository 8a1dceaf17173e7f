"""``rewrite(model, fmt)``: the export-friendly copy of a model that its family's recipe asks for.

The pieces: the rewrite registry (:mod:`hvit_deploy.rewrites`) knows the passes; the recipes
(:mod:`hvit_deploy.recipes`) say which passes each format gets and check their names against that registry;
this module joins the two. Dependencies run one way: rewriting → recipes → rewrites.
"""
from __future__ import annotations

import torch.nn as nn

from .errors import RewriteError
from .recipes import load_recipe
from .rewrites.base import FORMATS, rewrite_copy


def rewrite(
    model: nn.Module,
    fmt: str | None = None,
    *,
    input_size=None,
    batch_size: int = 1,
    names: list[str] | None = None,
    dynamic_batch: bool = False,
    backend: str | None = None,
) -> nn.Module:
    """Return an export-friendly copy of ``model`` for export format ``fmt`` ("onnx", "openvino" or "coreml").

    The copy has the same weights and the same outputs (bit-identical or equal up to float rounding, as each
    rewrite's tests show); the original is left untouched. Which rewrites apply comes from the family's recipe,
    or from ``names`` when given. Shapes are made static for ``input_size`` (default: the model's own) and
    ``batch_size``; with ``dynamic_batch`` the passes probe at ``batch_size`` but leave the batch as -1 in their
    reshapes, and a pass that cannot is refused. ``backend=`` is the old keyword for ``fmt``.
    """
    fmt = fmt or backend
    if fmt not in FORMATS:
        raise RewriteError(f"unknown backend {fmt!r}: rewrites are for an export format, one of "
                          f"{', '.join(FORMATS)}")
    if names is None:
        family = getattr(model, "hvit_family", None)
        if family is None:
            raise RewriteError("model was not built by hvit_deploy.create_model; pass names=[...] of the rewrites")
        names = load_recipe(family).rewrites_for(fmt, getattr(model, "hvit_name", None))
    return rewrite_copy(model, fmt, list(names), input_size=input_size, batch_size=batch_size,
                        dynamic_batch=dynamic_batch)
