"""Versions of the tools that shape an artifact or a timing (recorded in manifests and results)."""
from __future__ import annotations

import functools
import importlib.metadata as md
import subprocess

from .resources import package_parent

__version__ = "0.1.0"  # the package's version, set here once (hvit_deploy.__version__ re-exports it)

TOOLS = ("hvit-deploy", "torch", "timm", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxsim",
         "onnxscript", "openvino", "coremltools")


@functools.lru_cache(maxsize=None)
def tool_versions() -> dict[str, str]:
    out = {}
    for dist in TOOLS:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    if "hvit-deploy" not in out:
        out["hvit-deploy"] = __version__
    return out


@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
    """Commit of the checkout the package runs from, when it runs from one."""
    root = package_parent()
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
