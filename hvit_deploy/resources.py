"""Where the shipped YAML and images live: inside the installed package (a wheel puts ``export_recipes/`` and
``profiles/`` under ``hvit_deploy/``), or at the top of a checkout (where people look for them)."""
from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def package_dir() -> Path:
    """The ``hvit_deploy`` package directory this process imported (the one place it is computed)."""
    return _ROOT


def package_parent() -> Path:
    """The directory holding the package: a checkout's root, or site-packages for an installed wheel. Worker
    processes put it first on ``sys.path`` so they import the same ``hvit_deploy`` as their parent."""
    return _ROOT.parent


def _dir(name: str) -> Path:
    installed = _ROOT / name
    if installed.is_dir() and any(installed.glob("*.yaml")):
        return installed
    return _ROOT.parent / name


def recipes_dir() -> Path:
    return _dir("export_recipes")


def profiles_dir() -> Path:
    return _dir("profiles")


def asset(name: str) -> Path:
    return _ROOT / "assets" / name
