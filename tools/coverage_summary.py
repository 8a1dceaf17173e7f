"""Print the coverage of hvit_deploy after ``.ci/run``: per-module table (least covered first) and the totals,
line and branch apart. Reads the combined ``.coverage`` file that pytest-cov leaves (pyproject.toml
[tool.coverage.*] holds the settings); combines stray per-process files first if any are left.

    python tools/coverage_summary.py [--worst N]
"""
from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def _pct(hit: int, total: int) -> str:
    return f"{100.0 * hit / total:.1f}%" if total else "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worst", type=int, default=10, help="list the N least-covered modules (default 10)")
    args = ap.parse_args(argv)
    if glob.glob(".coverage.*"):
        subprocess.run([sys.executable, "-m", "coverage", "combine", "--append", "-q"], check=False)
    if not Path(".coverage").exists():
        print("coverage: no data (.coverage missing)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cov.json"
        subprocess.run([sys.executable, "-m", "coverage", "json", "-q", "-o", str(out)], check=True)
        data = json.loads(out.read_text())
    rows = []
    for name, f in data["files"].items():
        s = f["summary"]
        rows.append((s["percent_covered"], name, s))
    rows.sort()
    print(f"\ncoverage: {args.worst} least-covered modules (line+branch %, lines, branches)")
    for pct, name, s in rows[:args.worst]:
        print(f"  {pct:5.1f}%  {name:<48} lines {_pct(s['covered_lines'], s['num_statements']):>6}"
              f"  branches {_pct(s['covered_branches'], s.get('num_branches', 0)):>6}")
    t = data["totals"]
    print(f"coverage of hvit_deploy: lines {_pct(t['covered_lines'], t['num_statements'])} "
          f"({t['covered_lines']}/{t['num_statements']}), branches "
          f"{_pct(t['covered_branches'], t.get('num_branches', 0))} "
          f"({t['covered_branches']}/{t.get('num_branches', 0)}), combined {t['percent_covered']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
