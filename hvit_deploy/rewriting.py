"""``rewrite(model, fmt)``: the export-friendly copy of a model that its family's recipe asks for.

The pieces: the rewrite registry (:mod:`hvit_deploy.rewrites`) knows the passes; the recipes
(:mod:`hvit_deploy.recipes`) say which passes each format gets and check their names against that registry;
this module joins the two. Dependencies run one way: rewriting → recipes → rewrites.
"""
from __future__ import annotations

import torch.nn as nn

from .errors import RewriteError
from .recipes import recipe_rewrites
from .rewrites.base import FORMATS, rewrite_copy, unknown_format


def rewrite(
    model: nn.Module,
    fmt: str,
    *,
    input_size=None,
    batch_size: int = 1,
    names: list[str] | None = None,
    dynamic_batch: bool = False,
) -> nn.Module:
    """Return an export-friendly copy of ``model`` for export format ``fmt`` ("onnx", "openvino" or "coreml").

    The copy has the same weights and the same outputs (bit-identical or equal up to float rounding, as each
    rewrite's tests show); the original is left untouched. Which rewrites apply comes from the family's recipe,
    or from ``names`` when given. Shapes are made static for ``input_size`` (default: the model's own) and
    ``batch_size``; with ``dynamic_batch`` the passes probe at ``batch_size`` but leave the batch as -1 in their
    reshapes, and a pass that cannot is refused.
    """
    if fmt not in FORMATS:
        raise RewriteError(unknown_format(fmt))
    if names is None:
        names = recipe_rewrites(model, fmt)
    return rewrite_copy(model, fmt, list(names), input_size=input_size, batch_size=batch_size,
                        dynamic_batch=dynamic_batch)
