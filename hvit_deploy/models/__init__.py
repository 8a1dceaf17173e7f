"""Model families, one file each. Importing this package registers every variant.

Each family file has its variant table at the top and registers its variants with
:func:`hvit_deploy.registry.register_model`. Files are discovered, so a new family needs no edit here.
"""
from __future__ import annotations

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
