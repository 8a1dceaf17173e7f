"""Where the shipped YAML and images live: inside the installed package, or at the top of a checkout."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def _dir(package: str, checkout_dir: str) -> Path:
    try:
        p = Path(str(resources.files(package)))
        if p.is_dir() and any(p.glob("*.yaml")):
            return p
    except (ModuleNotFoundError, TypeError):
        pass
    return _ROOT.parent / checkout_dir


def recipes_dir() -> Path:
    return _dir("hvit_deploy.export_recipes", "export_recipes")


def profiles_dir() -> Path:
    return _dir("hvit_deploy.profiles", "profiles")


def asset(name: str) -> Path:
    return _ROOT / "assets" / name
