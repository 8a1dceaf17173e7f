"""Rewrites: export-friendly forms proven equal to the original (see :mod:`hvit_deploy.rewrites.base`).

Every module in this package registers its passes on import; ``common`` holds the family-agnostic ones and
each family has its own file.
"""
from __future__ import annotations

from .base import (
    BACKENDS,
    AppliedRewrite,
    Rewrite,
    RewriteContext,
    apply_rewrites,
    get_rewrite,
    list_rewrites,
    register_rewrite,
    replace_module,
    rewrite,
    swap_class,
)

__all__ = [
    "BACKENDS", "AppliedRewrite", "Rewrite", "RewriteContext", "apply_rewrites", "get_rewrite", "list_rewrites",
    "register_rewrite", "replace_module", "rewrite", "swap_class",
]
