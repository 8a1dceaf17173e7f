"""Mutation testing (mutmut) of the modules where a silent bug costs most, each against its FAST unit tests only.

    pip install -e ".[dev,mutation]" -c constraints.txt
    nice -n 15 python tools/mutation.py metrics gate          # or: all (the default)
    python tools/mutation.py --list

For each module a scratch copy of the repository is made (the checkout is never modified), a ``[tool.mutmut]``
section naming the one module and its test files is added to the copy's pyproject.toml, ``mutmut run`` runs
there, and the score (killed / all mutants; timeouts count as killed, "no tests" as survivors) and every
surviving mutant's diff are printed. Not run in CI (minutes per module on 2 cores); docs/testing.md has the last
figures and what each survivor means.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module key -> (source file, fast unit tests that exercise it)
TARGETS: dict[str, tuple[str, list[str]]] = {
    "metrics": ("hvit_deploy/metrics.py", ["tests/test_metrics_gate.py",
                                           "tests/test_export.py::test_metrics_detect_a_wrong_output"]),
    "gate": ("hvit_deploy/quantize/gate.py", [
        "tests/test_metrics_gate.py",
        "tests/test_int8.py::test_gate_counts_near_ties_as_agreement_but_not_clear_flips"]),
    "stats": ("hvit_deploy/bench/stats.py", ["tests/test_bench_stats.py"]),
    "compare": ("hvit_deploy/bench/compare.py", ["tests/test_compare.py"]),
    "checkpoint": ("hvit_deploy/checkpoint.py", ["tests/test_checkpoint.py"]),
}
COPY = ("hvit_deploy", "tests", "export_recipes", "profiles", "benchmarks", "pyproject.toml", "README.md")


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _prepare(work: Path, source: str, tests: list[str]) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, work / name)
    with open(work / "pyproject.toml", "a") as f:
        f.write("\n[tool.mutmut]\n"
                f"source_paths = [\"hvit_deploy\"]\n"
                f"only_mutate = [{json.dumps(source)}]\n"
                f"also_copy = [\"tests\", \"export_recipes\", \"profiles\", \"benchmarks\", \"README.md\"]\n"
                f"pytest_add_cli_args = [\"-n\", \"0\", \"-p\", \"no:cacheprovider\", \"-q\"]\n"
                f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
                "use_git_change_detection = false\n")


def _run(work: Path, jobs: int) -> tuple[dict, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(work))
    subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)], cwd=work, env=env,
                   check=False)
    res = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, env=env,
                         capture_output=True, text=True, check=False)
    counts: dict[str, int] = {}
    survivors = []
    for line in res.stdout.splitlines():
        m = re.match(r"\s*(\S+):\s*(.+?)\s*$", line)
        if not m:
            continue
        name, status = m.groups()
        counts[status] = counts.get(status, 0) + 1
        if status in ("survived", "no tests"):
            survivors.append(name)
    return counts, survivors


def _diff(work: Path, name: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(work))
    return subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, env=env, capture_output=True,
                          text=True, check=False).stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", default=["all"], help=f"{', '.join(TARGETS)} or all")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies (printed)")
    ap.add_argument("--list", action="store_true", help="list the modules and their tests")
    args = ap.parse_args(argv)
    if args.list:
        for k, (src, tests) in TARGETS.items():
            print(f"{k:<11} {src:<32} {' '.join(tests)}")
        return 0
    keys = list(TARGETS) if "all" in args.modules else args.modules
    unknown = [k for k in keys if k not in TARGETS]
    if unknown:
        print(f"mutation: unknown module(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    summary = []
    for key in keys:
        source, tests = TARGETS[key]
        work = Path(tempfile.mkdtemp(prefix=f"hvit-mutation-{key}-"))
        _prepare(work, source, tests)
        counts, survivors = _run(work, args.jobs)
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        total = sum(counts.values())
        score = killed / total if total else 0.0
        summary.append((key, source, killed, total, score, counts))
        print(f"\n== {source}: {killed}/{total} killed, score {score:.1%}  {counts}")
        for name in survivors:
            print(f"-- survivor {name}\n{_diff(work, name)}")
        if args.keep:
            print(f"(scratch copy kept: {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("\nmutation score per module")
    for key, source, killed, total, score, _ in summary:
        print(f"  {source:<32} {killed:>4}/{total:<4} {score:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
