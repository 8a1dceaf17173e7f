"""What the two on-device formats (ExecuTorch ``.pte``, LiteRT ``.tflite``) share: the ``mobile`` extra they need,
a converter's failure as one line naming the op, and the temporary-file dance (write beside the target, validate,
move into place)."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from pathlib import Path

from ..errors import BackendUnavailableError

INSTALL_HINT = 'pip install "hvit-deploy[mobile]"'
# litert-torch (the LiteRT converter) pins xdsl, which caps typing-extensions below what pydantic needs: pip cannot
# resolve it together with hvit-deploy, so it is a second step, and typing-extensions is put back after it
LITERT_HINT = (INSTALL_HINT + ' && pip install litert-torch && pip install -U "typing-extensions>=4.14.1" '
               "(litert-torch's xdsl pin downgrades typing-extensions below what pydantic needs)")
HINTS = {"executorch": INSTALL_HINT, "litert": LITERT_HINT}
# the distributions the mobile formats and runtimes import (import names)
EXTRA_MODULES = {"executorch": ("executorch",), "litert": ("litert_torch", "ai_edge_litert")}
# ops whose being left to slow fallback kernels costs most of a vision transformer's time
HEAVY_OPS = ("convolution", "conv", "linear", "addmm", "mm", "bmm", "matmul", "softmax", "native_layer_norm",
             "layer_norm", "scaled_dot_product")
_OP_RE = re.compile(r"\b(aten[.:]+[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?|torch\.ops\.[A-Za-z_0-9.]+)")


def missing(fmt: str) -> str | None:
    """None when ``fmt``'s packages are importable, else the one-line reason (no import is done)."""
    absent = [m for m in EXTRA_MODULES[fmt] if not _findable(m)]
    if not absent:
        return None
    return f"the {fmt} format needs the mobile extra ({', '.join(absent)} not installed): {HINTS[fmt]}"


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(fmt: str) -> None:
    """Raise the one-line install hint (exit 2 from the CLI) when the extra is not installed."""
    why = missing(fmt)
    if why is not None:
        raise BackendUnavailableError(why)


def reason(e: BaseException) -> str:
    """A converter's exception as one line, naming the op when the message does."""
    text = str(e).strip()
    lines = [t.strip() for t in text.splitlines() if t.strip()]
    first = (lines[0] if lines else type(e).__name__)[:300]
    if _OP_RE.search(first):
        return f"{type(e).__name__}: {first}"
    op = _OP_RE.search(text)
    return f"{type(e).__name__}: {first}" + (f" (op {op.group(1)})" if op else "")


def is_heavy(op: str) -> bool:
    base = op.split(".")[-1] if op.startswith("aten.") else op
    base = base.replace("aten_", "", 1).split(".")[0].lower().lstrip("_")  # aten__softmax_default: softmax
    return any(base == h or base.startswith(h + "_") or base == h + "_default" for h in HEAVY_OPS)


def temp_beside(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.stem}.{tag}.{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def cleanup(*paths: Path):
    try:
        yield
    finally:
        for p in paths:
            p.unlink(missing_ok=True)
