"""hvit-deploy: build, rewrite, export, validate and time hybrid vision transformers for edge deployment.

The stable Python API::

    import hvit_deploy
    hvit_deploy.list_models()                         # canonical names of every variant
    m = hvit_deploy.create_model("smt_t", checkpoint=None)
    r = hvit_deploy.rewrite(m, "onnx")                # export-friendly copy with the same outputs
"""
from __future__ import annotations

from .errors import HvitError
from .factory import create_model
from .registry import get_spec, list_families, list_models
from .rewriting import rewrite
from .versions import __version__
from . import models as _models  # noqa: F401,E402  registers every family (ours and in timm) on import


__all__ = ["create_model", "list_models", "list_families", "get_spec", "rewrite", "HvitError", "__version__"]
