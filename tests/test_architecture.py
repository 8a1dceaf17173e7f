"""The package's shape, kept: imports flow one way (the import-linter contract in pyproject.toml) and the
orchestration code stays in functions a reader can take in at once."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "hvit_deploy"
MAX_FUNCTION_LINES = 60  # code lines of one function, its docstring not counted


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` in its own process (it sets up its own console, which must not touch pytest's capture)."""
    pytest.importorskip("importlinter.cli")
    code = "import sys; from importlinter.cli import lint_imports_command as c; c()"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code, "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_import_layers_contract_holds():
    """`lint-imports` with the contract in pyproject.toml: no package imports one above it (imports inside
    functions included), so there is no import cycle between the subpackages."""
    r = _lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout


def test_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a copy of the package with one import pointing up (the registry importing
    the CLI, inside a function) breaks it."""
    copy = tmp_path / "hvit_deploy"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    registry = copy / "registry.py"
    registry.write_text(registry.read_text() + "\n\ndef _upward():\n    from .cli import export  # noqa: F401\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    r = _lint_imports(tmp_path)
    assert r.returncode != 0
    assert "hvit_deploy.registry -> hvit_deploy.cli.export" in r.stdout


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                lines -= body[0].end_lineno - body[0].lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{node.lineno} "
                           f"{node.name} ({lines} lines)")
    return out


@pytest.mark.parametrize("place", ["cli", "cluster", "export/pipeline.py"])
def test_orchestration_functions_are_short(place):
    target = PKG / place
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    long = [f for path in files for f in _long_functions(path)]
    assert not long, "functions over %d lines: %s" % (MAX_FUNCTION_LINES, "; ".join(long))


def test_long_function_check_counts_code_lines(tmp_path):
    src = tmp_path / "m.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))  # + the def line: at the limit
    src.write_text(f'def ok():\n    """doc\n    more doc"""\n{body}\n\ndef long():\n{body}\n    return 1\n')
    found = [f.split()[1] for f in _long_functions(src)]
    assert found == ["long"]


def test_heavy_first_lists_test_files_that_exist():
    """tests/conftest.py's HEAVY_FIRST orders files for the xdist workers: a renamed or removed file would silently
    fall to the back, so every name must be a test file here, listed once."""
    from conftest import HEAVY_FIRST

    tests = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    assert len(set(HEAVY_FIRST)) == len(HEAVY_FIRST) and set(HEAVY_FIRST) <= tests, set(HEAVY_FIRST) - tests


def test_heavy_files_are_handed_out_first(pytester, monkeypatch):
    """With the project's options (--dist loadfile --no-loadscope-reorder) a file named in HEAVY_FIRST runs before
    the others in an xdist worker, whatever its name or number of tests."""
    import inspect

    import conftest

    # the hook itself, with a list of one file (not the whole conftest: its torch import would cost seconds)
    pytester.makeconftest("import os\nHEAVY_FIRST = ('test_z_heavy.py',)\n\n\n"
                          + inspect.getsource(conftest.pytest_collection_modifyitems))
    pytester.makepyfile(test_a_light="def test_1(): pass\ndef test_2(): pass\ndef test_3(): pass\n",
                        test_z_heavy="def test_1(): pass\n")
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")   # xdist only: the other plugins cost seconds
    r = pytester.runpytest_subprocess("-p", "xdist", "-n", "1", "--dist", "loadfile", "--no-loadscope-reorder", "-v",
                                      "-p", "no:cacheprovider")
    r.assert_outcomes(passed=4)
    ran = [line.split()[-1] for line in r.outlines if "PASSED" in line]
    assert ran[0] == "test_z_heavy.py::test_1", r.outlines
