"""Converters talk a lot (progress lines, warnings, coremltools' notes about missing macOS libraries).
Their chatter is captured and shown only when something fails."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings

from ..utils.native_io import native_stderr_into


@contextlib.contextmanager
def captured(native: bool = False):
    """Capture Python-level stdout/stderr, warnings and converter loggers (``native``: also what native code
    writes to descriptor 2); yields the buffer."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("coremltools", "torch.onnx", "torch.export", "torch._dynamo",
                                              "onnxscript", "torch.fx", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), \
                (native_stderr_into(buf) if native else contextlib.nullcontext()):
            try:
                yield buf
            finally:
                for lg, lv in zip(loggers, levels):
                    lg.setLevel(lv)


def import_coremltools():
    """Import coremltools without its warnings about the macOS-only libraries and untested torch versions."""
    if "coremltools" in sys.modules:
        return sys.modules["coremltools"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with captured():
        import coremltools  # noqa: F401
    return sys.modules["coremltools"]
