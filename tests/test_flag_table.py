"""docs/flags.md lists every public flag with the test that covers it: this test reads the REAL argparse
parsers and fails when a flag has no row, a row names a flag the command lacks, or a row's test does not exist."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from hvit_deploy.cli.bench import build_compare_parser, build_parser as build_bench_parser
from hvit_deploy.cli.eval import build_parser as build_eval_parser
from hvit_deploy.cli.export import build_parser as build_export_parser

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "flags.md"
ROW = re.compile(r"^\|\s*`(?P<cmd>[^`]+)`\s*\|\s*`(?P<flag>--[\w-]+)`\s*\|\s*`tests/(?P<file>[\w/]+\.py)::(?P<fn>\w+)`")
# a row may name more covering tests after the first (e.g. a value of the flag with its own test: bf16)
MORE = re.compile(r"`tests/(?P<file>[\w/]+\.py)::(?P<fn>\w+)`")


def _parsers():
    return {"hvit-export": build_export_parser(), "hvit-bench": build_bench_parser(),
            "hvit-bench compare": build_compare_parser(), "hvit-eval": build_eval_parser()}


def _flags() -> set[tuple[str, str]]:
    out = set()
    for cmd, p in _parsers().items():
        for a in p._actions:
            longs = [s for s in a.option_strings if s.startswith("--")]
            if longs and "--help" not in longs:
                out.add((cmd, max(longs, key=len)))
    return out


def _rows() -> dict[tuple[str, str], list[tuple[str, str]]]:
    rows: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for line in TABLE.read_text().splitlines():
        m = ROW.match(line)
        if m:
            key = (m["cmd"], m["flag"])
            assert key not in rows, f"docs/flags.md: two rows for {key}"
            rows[key] = [(t["file"], t["fn"]) for t in MORE.finditer(line)]
    return rows


def _test_functions(file: str) -> set[str]:
    tree = ast.parse((ROOT / "tests" / file).read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.name.startswith("test")}


def test_the_parsers_have_flags():
    flags = _flags()
    assert len(flags) > 60 and ("hvit-export", "--to") in flags and ("hvit-bench compare", "--alpha") in flags


def test_every_flag_has_a_row():
    missing = sorted(_flags() - set(_rows()))
    assert not missing, f"flags with no row in docs/flags.md: {missing}"


def test_every_row_names_a_real_flag():
    stale = sorted(set(_rows()) - _flags())
    assert not stale, f"docs/flags.md rows for flags the commands do not have: {stale}"


def test_every_row_names_an_existing_test():
    bad = []
    for key, tests in sorted(_rows().items()):
        for file, fn in tests:
            path = ROOT / "tests" / file
            if not path.is_file() or fn not in _test_functions(file):
                bad.append(f"{key}: tests/{file}::{fn}")
    assert not bad, "docs/flags.md names tests that do not exist: " + "; ".join(bad)


def test_the_checker_catches_a_missing_row_and_a_wrong_test(tmp_path, monkeypatch):
    """The table checks can fail: a table without one row, and one naming a missing test, are both caught."""
    lines = TABLE.read_text().splitlines()
    first = next(i for i, l in enumerate(lines) if ROW.match(l))
    monkeypatch.setattr(sys.modules[__name__], "TABLE", tmp_path / "flags.md")
    (tmp_path / "flags.md").write_text("\n".join(lines[:first] + lines[first + 1:]))
    with pytest.raises(AssertionError, match="flags with no row"):
        test_every_flag_has_a_row()
    broken = lines[first].replace("::test_", "::no_such_test_")
    (tmp_path / "flags.md").write_text("\n".join(lines[:first] + [broken] + lines[first + 1:]))
    with pytest.raises(AssertionError, match="names tests that do not exist"):
        test_every_row_names_an_existing_test()
    more = next(i for i, l in enumerate(lines) if ROW.match(l) and len(MORE.findall(l)) > 1)
    second = lines[more].rsplit("::test_", 1)
    (tmp_path / "flags.md").write_text("\n".join(lines[:more] + ["::no_such_test_".join(second)] + lines[more + 1:]))
    with pytest.raises(AssertionError, match="names tests that do not exist"):   # a second test is checked too
        test_every_row_names_an_existing_test()
