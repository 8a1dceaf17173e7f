"""Output that native code writes to the process's file descriptors, past Python's ``sys.stderr``."""
from __future__ import annotations

import contextlib
import io
import os
import sys


@contextlib.contextmanager
def native_stderr_into(buf: io.StringIO):
    """What native code writes straight to file descriptor 2 while inside (LiteRT's MLIR converter logs a line per
    op it cannot annotate there, past Python's ``sys.stderr``) goes into ``buf`` instead of the terminal."""
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):   # no usable descriptor 2 (an embedding host): leave it alone
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buf.write(tmp.read().decode("utf-8", errors="replace"))
