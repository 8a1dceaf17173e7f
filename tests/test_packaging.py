"""Recipes, profiles and sample images must work from an installed wheel, not only from a checkout."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "hvit_deploy", "export_recipes", "profiles"):
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif p.exists():
            shutil.copy(p, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, timeout=600)
    return next(out.glob("hvit_deploy-*.whl"))


def test_wheel_contains_recipes_profiles_and_images(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in (ROOT / "export_recipes").glob("*.yaml"):
        assert f"hvit_deploy/export_recipes/{recipe.name}" in names
    for profile in (ROOT / "profiles").glob("*.yaml"):
        assert f"hvit_deploy/profiles/{profile.name}" in names
    assert "hvit_deploy/assets/chelsea.png" in names
    # every subpackage ships (a package missing from pyproject's list imports from a checkout but not a wheel)
    for init in (ROOT / "hvit_deploy").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names, init
    assert "hvit_deploy/runtimes/onnxruntime_cpu.py" in names
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "hvit-export = hvit_deploy.cli.export:main" in entry_points
    assert "hvit-bench = hvit_deploy.cli.bench:main" in entry_points


def test_installed_wheel_finds_its_files(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=600)
    code = (
        "import hvit_deploy, json\n"
        "from hvit_deploy.resources import recipes_dir, profiles_dir, asset\n"
        "from hvit_deploy.recipes import load_recipe\n"
        "print(json.dumps({'pkg': hvit_deploy.__file__, 'recipes': str(recipes_dir()),"
        " 'profiles': str(profiles_dir()), 'twins': load_recipe('twins').rewrites_for('coreml'),"
        " 'image': asset('chelsea.png').is_file(),"
        " 'runtimes': __import__('hvit_deploy.runtimes', fromlist=['x']).runtime_names()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    import json

    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["pkg"].startswith(str(target))
    assert info["recipes"].startswith(str(target)) and info["image"]
    assert "twins.lsa_rank5" in info["twins"]
    assert {"torch", "onnxruntime", "openvino", "coreml"} <= set(info["runtimes"])
    if any((ROOT / "profiles").glob("*.yaml")):
        assert info["profiles"].startswith(str(target))
