"""How often does the pull-request gate catch a real slowdown, and how often does it cry wolf?

The gate is what `.github/workflows/latency.yml` runs: `hvit-bench --profile ci --against BASE` from the head
checkout, then `hvit-bench compare BASE.json HEAD.json --threshold T --require-power 5%`. This script runs
that gate, for real, on candidates it builds:

* an **A/A** candidate: a byte-identical copy of the checkout (the same work on both sides);
* **slowed** candidates: a copy whose ``create_model`` adds a real, calibrated amount of extra work inside
  the graph — a chain of 3x3 convolutions on the input whose result enters the logits multiplied by 1e-30, so
  the outputs are unchanged (validation still passes) but every runtime must compute it. The number of
  convolutions is sized, by timing the exported ONNX files on ONNX Runtime in this process, to cost the asked
  percentage of the model's time, and the achieved figure is printed.

It runs the gate ``--gates`` times per candidate and prints, per slowdown, the detection rate (exit 1) and for
A/A the false-alarm rate, with how many gates were inconclusive (exit 5), quiet and, with ``--load``, under a
competing CPU load that the script starts itself (one busy process per core, bounded by the script's run, local
only). Every figure says how many gates it rests on.

    python benchmarks/gate_power.py --slowdowns 0 2 5 10 --gates 10
    python benchmarks/gate_power.py --slowdowns 0 5 --gates 6 --load
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# appended to the candidate's hvit_deploy/factory.py: every model built by name gets the extra work
SLOW_PATCH = '''

# --- benchmarks/gate_power.py: a calibrated slowdown (outputs unchanged: the extra term is scaled by 1e-30) ---
import torch as _torch


class _ExtraWork(nn.Module):
    def __init__(self, inner, n):
        super().__init__()
        self.inner = inner
        self.extra = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(n)])
        for name in ("hvit_name", "hvit_family", "hvit_input_size"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    def forward(self, x):
        return self.inner(x) + 1e-30 * self.extra(x).mean()


_create_model_plain = create_model


def create_model(*args, **kwargs):
    m = _create_model_plain(*args, **kwargs)
    w = _ExtraWork(m, {n}).eval()
    w.hvit_family = m.hvit_family
    return w
'''


def copy_checkout(dst: Path) -> Path:
    for name in ("hvit_deploy", "export_recipes", "profiles"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def make_slow(dst: Path, n: int) -> Path:
    copy_checkout(dst)
    with open(dst / "hvit_deploy" / "factory.py", "a") as f:
        f.write(SLOW_PATCH.replace("{n}", str(n)))
    return dst


def ort_session(model, threads: int, tmp: Path):
    """``model`` exported to ONNX and opened on the project's onnxruntime runtime (as hvit-bench opens it)."""
    import torch

    from hvit_deploy.runtimes import open_runtime

    path = tmp / f"m{time.monotonic_ns()}.onnx"
    x = torch.randn(1, *model.hvit_input_size)
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=18)
    rt = open_runtime("onnxruntime", {"artifact": str(path), "threads": threads})
    rt.prepare()
    for _ in range(30):
        rt.call()
    return rt


def interleaved_ratio(rt_a, rt_b, rounds: int = 20, runs: int = 40) -> float:
    """Median over rounds of median(b) / median(a), a and b alternating round by round (drift cancels)."""
    ratios = []
    for r in range(rounds):
        meds = {}
        for name, rt in (("a", rt_a), ("b", rt_b)) if r % 2 == 0 else (("b", rt_b), ("a", rt_a)):
            ts = []
            for _ in range(runs):
                t0 = time.perf_counter()
                rt.call()
                ts.append(time.perf_counter() - t0)
            meds[name] = statistics.median(ts)
        ratios.append(meds["b"] / meds["a"])
    return statistics.median(ratios)


def calibrate(model_name: str, threads: int, slowdowns: list[float]) -> dict[float, tuple[int, float]]:
    """Convolutions needed for each slowdown, and the slowdown they gave when timed (ONNX Runtime, interleaved
    against the plain model in the same process)."""
    import torch.nn as nn

    from hvit_deploy import create_model

    base = create_model(model_name)

    class Wrap(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.inner = base
            self.extra = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(n)])
            self.hvit_input_size = base.hvit_input_size

        def forward(self, x):
            return self.inner(x) + 1e-30 * self.extra(x).mean()

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = ort_session(Wrap(0), threads, tmp)
        probe = 32
        per_conv = max((interleaved_ratio(plain, ort_session(Wrap(probe), threads, tmp)) - 1) / probe, 1e-5)
        for s in slowdowns:
            if s <= 0:
                continue
            n = max(1, round(s / 100 / per_conv))
            got = interleaved_ratio(plain, ort_session(Wrap(n), threads, tmp)) - 1
            out[s] = (n, got * 100)
    return out


def burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x = (x * 1103515245 + 12345) % 2147483648


def run_gate(head: Path, base: Path, work: Path, args) -> int:
    env = {**os.environ, "PYTHONPATH": str(head), "HVIT_CACHE_DIR": str(work / "cache")}
    h, b = work / "head.json", work / "base.json"
    for p in (h, b):
        p.unlink(missing_ok=True)
    bench = [sys.executable, "-m", "hvit_deploy.cli.bench", "--profile", args.profile, "--models", args.model,
             "--against", str(base), "--out", str(h), "--against-out", str(b), "--no-progress"]
    if args.backends:
        bench += ["--backends", *args.backends]
    r = subprocess.run(bench, cwd=head, env=env, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        print(r.stderr[-1500:], file=sys.stderr)
        return 2
    cmp = [sys.executable, "-m", "hvit_deploy.cli.bench", "compare", str(b), str(h), "--threshold", args.threshold,
           "--require-power", args.require_power, "--format", "json"]
    r = subprocess.run(cmp, cwd=head, env=env, capture_output=True, text=True)
    if args.verbose:
        rows = json.loads(r.stdout)["rows"] if r.stdout.strip().startswith("{") else []
        for row in rows:
            print(f"    {row['backend']:12s} {row['verdict']:10s} ratio {row['ratio']:.3f} "
                  f"detectable {row['detectable_slowdown']}", file=sys.stderr)
    return r.returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientmod_xxs")
    ap.add_argument("--backends", nargs="+", help="default: the profile's")
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--threads", type=int, default=2, help="threads used to calibrate the slowdowns")
    ap.add_argument("--slowdowns", nargs="+", type=float, default=[0, 2, 5, 10], help="percent; 0 = A/A")
    ap.add_argument("--gates", type=int, default=10, help="gate runs per candidate")
    ap.add_argument("--threshold", default="2%")
    ap.add_argument("--require-power", default="5%")
    ap.add_argument("--load", action="store_true", help="also under a competing CPU load (one busy process per core)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hvit-gate-power-") as tmp:
        tmp = Path(tmp)
        base = copy_checkout(tmp / "base")
        cal = calibrate(args.model, args.threads, args.slowdowns)
        heads = {}
        for s in args.slowdowns:
            if s <= 0:
                heads[s] = copy_checkout(tmp / "aa")
            else:
                n, got = cal[s]
                heads[s] = make_slow(tmp / f"slow{s:g}", n)
                print(f"+{s:g}%: {n} extra 3x3 convolutions; timed on ONNX Runtime at {args.threads} threads: "
                      f"+{got:.1f}%", file=sys.stderr)
        rows = []
        for loaded in ([False, True] if args.load else [False]):
            burners = []
            if loaded:
                budget = args.gates * len(heads) * 600.0
                burners = [mp.Process(target=burn, args=(budget,), daemon=True) for _ in range(os.cpu_count() or 2)]
                for p in burners:
                    p.start()
            try:
                for s, head in heads.items():
                    codes, walls = [], []
                    for g in range(args.gates):
                        t0 = time.monotonic()
                        codes.append(run_gate(head, base, tmp, args))
                        walls.append(time.monotonic() - t0)
                        print(f"  {'load' if loaded else 'quiet'} +{s:g}% gate {g + 1}/{args.gates}: exit "
                              f"{codes[-1]} in {walls[-1]:.0f} s", file=sys.stderr)
                    n = len(codes)
                    flagged = sum(c == 1 for c in codes)
                    rows.append([("A/A" if s <= 0 else f"+{s:g}%") + (f" (timed +{cal[s][1]:.1f}%)" if s > 0 else ""),
                                 "load" if loaded else "quiet", n,
                                 f"{flagged}/{n} = {flagged / n:.0%}", sum(c == 5 for c in codes),
                                 sum(c not in (0, 1, 5) for c in codes), f"{statistics.median(walls):.0f}"])
            finally:
                for p in burners:
                    p.terminate()
    from tabulate import tabulate

    print(tabulate(rows, headers=["candidate", "machine", "gates", "flagged (exit 1)", "inconclusive (5)",
                                  "errors", "gate wall s (median)"]))
    print(f"gate: hvit-bench --profile {args.profile} --against BASE (model {args.model}), then compare "
          f"--threshold {args.threshold} --require-power {args.require_power}; {time.monotonic() - t_start:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
