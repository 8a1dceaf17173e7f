"""Rewrites: export-friendly forms proven equal to the original (see :mod:`hvit_deploy.rewrites.base`).

Every module in this package registers its passes on import; ``common`` holds the family-agnostic ones and
each family has its own file.
"""
from __future__ import annotations

from .base import (
    BACKENDS,
    FORMATS,
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
    "BACKENDS", "AppliedRewrite", "Rewrite", "RewriteContext", "apply_rewrites", "get_rewrite", "list_rewrites",
    "register_rewrite", "replace_module", "rewrite", "rewrite_copy", "swap_class", "FORMATS",
]


def __getattr__(name: str):
    # ``hvit_deploy.rewrites.rewrite`` (the recipe-driven one) lives in hvit_deploy.rewriting, which depends on
    # the recipes, which depend on this package: imported on first use so the dependency stays one way
    if name == "rewrite":
        from ..rewriting import rewrite

        return rewrite
    raise AttributeError(name)
