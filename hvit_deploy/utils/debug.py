"""The debug switch every layer reads: ``HVIT_DEBUG=1`` lets bugs raise with their traceback."""
from __future__ import annotations

import os

DEBUG_ENV = "HVIT_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")
