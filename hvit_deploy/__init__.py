"""hvit-deploy: build, rewrite, export, validate and time hybrid vision transformers for edge deployment.

The stable Python API::

    import hvit_deploy
    hvit_deploy.list_models()                         # canonical names of every variant
    m = hvit_deploy.create_model("smt_t", checkpoint=None)
    r = hvit_deploy.rewrite(m, "onnx")                # export-friendly copy with the same outputs
"""
from __future__ import annotations

import os as _os

from .errors import HvitError
from .registry import MODELS as _MODELS
from .registry import get_spec, list_families, list_models
from .versions import __version__

if not _os.environ.get("HVIT_DEFER_FAMILIES"):
    # imports every family file: each registers its variants, ours and in timm (with pretrained_cfg). hvit-bench's
    # worker processes defer it (the registry loads them on first use): one timing ONNX Runtime or OpenVINO never
    # builds a model, and timm's import is half of the package's 5 s start-up
    from .factory import create_model
    from .rewriting import rewrite

    _MODELS.load()


def __getattr__(name: str):
    # deferred (the workers): torch is imported with the first create_model or rewrite, not with the package, so a
    # worker timing ONNX Runtime, OpenVINO, ExecuTorch or LiteRT starts without it (2-3 s less per worker)
    if name == "create_model":
        from .factory import create_model

        return create_model
    if name == "rewrite":
        from .rewriting import rewrite

        return rewrite
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["create_model", "list_models", "list_families", "get_spec", "rewrite", "HvitError", "__version__"]
