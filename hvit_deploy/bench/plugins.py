"""Extra modules to import before benchmarking, so models registered outside the package can be timed.

``hvit-bench --plugin my_models.py --models my_net`` imports ``my_models.py`` (a file path or a module name) in
the coordinator and in every worker; the file registers its builders with ``hvit_deploy.registry.register_model``
or ``add_spec``. Workers receive the list through the ``HVIT_BENCH_PLUGINS`` environment variable.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from ..errors import HvitError

ENV_VAR = "HVIT_BENCH_PLUGINS"
_loaded: set[str] = set()
loaded_files: list[str] = []  # plugin source files, part of the artifact cache key


def normalise(items: list[str]) -> list[str]:
    """File paths made absolute (workers run elsewhere); module names kept."""
    out = []
    for item in items:
        p = Path(item)
        out.append(str(p.resolve()) if p.suffix == ".py" or p.exists() else item)
    return out


def load(items: list[str]) -> None:
    for item in items:
        if not item or item in _loaded:
            continue
        try:
            if item.endswith(".py") or os.path.sep in item:
                path = Path(item)
                if not path.is_file():
                    raise HvitError(f"--plugin {item}: no such file")
                if str(path.resolve()) in loaded_files:  # the same file named another way (relative, absolute)
                    _loaded.add(item)
                    continue
                name = f"hvit_bench_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
                loaded_files.append(str(path.resolve()))
            else:
                importlib.import_module(item)
        except HvitError:
            raise
        except Exception as e:  # noqa: BLE001 - a broken plugin is an input error
            raise HvitError(f"--plugin {item}: import failed: {type(e).__name__}: {e}") from None
        _loaded.add(item)


def load_from_env() -> None:
    value = os.environ.get(ENV_VAR, "")
    if value:
        load([v for v in value.split(os.pathsep) if v])
