"""The side-by-side benchmark scripts still run end to end (one short round), so they do not rot between the
times someone needs their figures. Their timings are not asserted: speed lives in the benchmarks themselves."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, args", [
    ("efficientmod_forms.py", ["--model", "efficientmod_xxs", "--forms", "repeat", "broadcast",
                               "--rounds", "1", "--iters", "1", "--warmup", "1"]),
    ("acmix_shift.py", ["--case", "module", "--rounds", "1", "--iters", "1", "--warmup", "1", "--threads", "1"]),
])
def test_forms_benchmark_runs_and_forms_agree(script, args):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("fastest:") >= 2  # one table per backend (ONNX Runtime, OpenVINO)
    diffs = [float(d) for d in re.findall(r"max\|diff\| vs eager (\S+)", r.stdout)]
    assert diffs and max(diffs) < 1e-5
