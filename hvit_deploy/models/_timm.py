"""Builders for the families whose faithful implementation is timm's own (Twins, CrossViT)."""
from __future__ import annotations

import timm


def timm_builder(timm_name: str):
    def build(**kwargs):
        return timm.create_model(timm_name, pretrained=False, **kwargs)

    build.__name__ = timm_name
    build.__doc__ = f"timm's {timm_name}"
    return build
