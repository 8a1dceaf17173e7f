"""Rewrites: export-friendly forms proven equal to the original (see :mod:`hvit_deploy.rewrites.base`).

Every module in this package registers its passes on import (the registry finds them by name on first read);
``common`` holds the family-agnostic ones and each family has its own file. The recipe-driven
``rewrite(model, "onnx")`` is :func:`hvit_deploy.rewrite` (:mod:`hvit_deploy.rewriting`), above the recipes.
"""
from __future__ import annotations

from .base import (
    FORMATS,
    REWRITES,
    AppliedRewrite,
    Rewrite,
    RewriteContext,
    apply_rewrites,
    get_rewrite,
    list_rewrites,
    register_rewrite,
    replace_module,
    rewrite_copy,
    swap_class,
)

__all__ = [
    "AppliedRewrite", "FORMATS", "REWRITES", "Rewrite", "RewriteContext", "apply_rewrites", "get_rewrite",
    "list_rewrites", "register_rewrite", "replace_module", "rewrite_copy", "swap_class",
]
