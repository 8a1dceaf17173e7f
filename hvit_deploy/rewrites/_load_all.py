"""Imports every rewrite module of the package (each registers its passes); a new file needs no edit here."""
from __future__ import annotations

import importlib
import pkgutil

from .. import rewrites as _pkg

for _info in sorted(pkgutil.iter_modules(_pkg.__path__), key=lambda m: m.name):
    if not _info.name.startswith("_") and _info.name != "base":
        importlib.import_module(f"{_pkg.__name__}.{_info.name}")
