"""How often does the pull-request gate catch a real slowdown, and how often does it cry wolf?

The gate is what `.github/workflows/latency.yml` runs: `hvit-bench --profile ci --against BASE` from the head
checkout, then `hvit-bench compare BASE.json HEAD.json --threshold T --require-power 5%`. This script runs
that gate, for real, on candidates it builds:

* an **A/A** candidate: a byte-identical copy of the checkout (the same work on both sides);
* **slowed** candidates: a copy whose ``create_model`` adds a real, calibrated amount of extra work inside
  the graph — a chain of 3x3 convolutions on the input subsampled 2x each way, so that one convolution costs
  about 0.6 % of EfficientMod-xxs and 2 % is resolvable (a submodule and a forward hook, so the model keeps its
  class and its family's rewrites) whose result enters the logits multiplied by 1e-30, so
  the outputs are unchanged (validation still passes) but every runtime must compute it. The number of
  convolutions is sized, by timing the exported ONNX files on ONNX Runtime in this process, to cost the asked
  percentage of the model's time, and the achieved figure is printed.

It runs the gate ``--gates`` times per candidate (candidates taking turns) as the workflow does, retries on
inconclusive included (``--retries``, 0 for single-shot gates), and prints, per slowdown, the detection rate
(exit 1) and for A/A the false-alarm rate, with how many gates stayed inconclusive (exit 5), quiet and, with
``--load``, under a competing CPU load that the script starts itself (one busy process per core, bounded by the
script's run, local only). Every figure says how many gates it rests on. ``--keep DIR`` keeps each gate's
results files; ``--analyse DIR`` re-judges them under other statistics; ``--tune`` compares block lengths.

    python benchmarks/gate_power.py --slowdowns 0 2 5 10 --aa-gates 100 --gates 20
    python benchmarks/gate_power.py --slowdowns 0 5 --gates 6 --load --load-gates 6
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
def _gate_extra_work(module, args, output):
    return output + 1e-30 * module.gate_extra(args[0][..., ::2, ::2]).mean()


_create_model_plain = create_model


def create_model(*args, **kwargs):
    m = _create_model_plain(*args, **kwargs)
    # a submodule plus a forward hook, so the model keeps its own class (its family's rewrites still apply)
    m.gate_extra = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range({n})]).eval()
    m.register_forward_hook(_gate_extra_work)
    return m
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
            return self.inner(x) + 1e-30 * self.extra(x[..., ::2, ::2]).mean()

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


def tune(args) -> int:
    """Which block length resolves the most per minute: A/A pairs (two sessions of the same artifact in one
    process, as the gate's worker holds them) timed in ABBA blocks of each length, the same number of runs per
    side each time, block lengths taking turns; prints the smallest slowdown each could detect."""
    from hvit_deploy import create_model
    from hvit_deploy.bench.stats import compare_paired
    from hvit_deploy.bench.worker import paired_blocks
    from tabulate import tabulate

    blocks_to_try = [int(b) for b in args.tune_blocks]
    results: dict[int, list[float]] = {b: [] for b in blocks_to_try}
    walls: dict[int, list[float]] = {b: [] for b in blocks_to_try}
    with tempfile.TemporaryDirectory() as tmp:
        m = create_model(args.model)
        rt_a = ort_session(m, args.threads, Path(tmp))
        rt_b = ort_session(m, args.threads, Path(tmp))
        for rep in range(args.tune_repeats):
            for k in blocks_to_try if rep % 2 == 0 else reversed(blocks_to_try):
                t0 = time.monotonic()
                a, b = paired_blocks(rt_a.call, rt_b.call, max(2, args.tune_runs // k), k, warm=5)
                walls[k].append(time.monotonic() - t0)
                am = [statistics.median(a[i * k:(i + 1) * k]) for i in range(len(a) // k)]
                bm = [statistics.median(b[i * k:(i + 1) * k]) for i in range(len(b) // k)]
                t = compare_paired(am, bm, baseline_median=statistics.median(a), candidate_median=statistics.median(b),
                                   threshold=0.02)
                results[k].append(t.detectable * 100)
    rows = [[k, max(2, args.tune_runs // k), f"{statistics.median(results[k]):.1f}%",
             f"{min(results[k]):.1f}-{max(results[k]):.1f}%", f"{statistics.median(walls[k]):.1f}"]
            for k in blocks_to_try]
    print(tabulate(rows, headers=["block (runs)", "block pairs", "could detect (median)", "range", "s per side pair"]))
    print(f"{args.model} on onnxruntime, {args.threads} threads, {args.tune_runs} runs per side per measurement, "
          f"{args.tune_repeats} measurements per block length (block lengths taking turns), one process, A/A")
    return 0


def analyse(folder: Path, threshold: float, alpha: float = 0.01) -> int:
    """Re-judge kept gates (``--keep``) under other statistics of the same per-block ratios: which centre
    (median or trimmed mean) and whether the bootstrap resamples worker processes first. Prints, per entry
    kind, the median "could detect" and how many gates each variant would flag."""
    import numpy as np
    from tabulate import tabulate

    from hvit_deploy.bench.stats import compare_paired

    variants = {"median, processes first": ("median", True), "trimmed mean, processes first": ("trimmed", True),
                "median, blocks only": ("median", False), "trimmed mean, blocks only": ("trimmed", False)}
    acc: dict = {}
    for gate in sorted(p for p in folder.iterdir() if (p / "head.json").is_file()):
        kind = gate.name.rsplit("-", 1)[0]
        h, b = (json.loads((gate / f).read_text()) for f in ("head.json", "base.json"))
        bb = {(e["model"], e["backend"], e["variant"]): e for e in b["results"]}
        for c in h["results"]:
            e = bb.get((c["model"], c["backend"], c["variant"]))
            if not e or not c.get("round_medians_ms") or len(e["round_medians_ms"]) != len(c["round_medians_ms"]):
                continue
            for name, (center, grouped) in variants.items():
                t = compare_paired(e["round_medians_ms"], c["round_medians_ms"],
                                   baseline_median=float(np.median(e["samples_ms"])),
                                   candidate_median=float(np.median(c["samples_ms"])), threshold=threshold,
                                   alpha=alpha, round_process=c.get("round_process") if grouped else None,
                                   center=center)
                acc.setdefault((kind, c["backend"], name), []).append((t.detectable, t.verdict, t.ratio))
    rows = [[kind, backend, name, len(v), f"{np.median([r for *_, r in v]):.3f}",
             f"{min(r for *_, r in v):.3f}-{max(r for *_, r in v):.3f}", f"{np.median([d for d, *_ in v]) * 100:.1f}%",
             sum(x == "regression" for _, x, _ in v), sum(d > 0.05 and x != "regression" for d, x, _ in v)]
            for (kind, backend, name), v in sorted(acc.items())]
    print(tabulate(rows, headers=["gates", "runtime", "statistic", "n", "ratio (median)", "ratio range",
                                  "could detect (median)", "flagged", "inconclusive at 5%"]))
    return 0


def burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x = (x * 1103515245 + 12345) % 2147483648


def run_gate(head: Path, base: Path, work: Path, args, keep: Path | None = None) -> int:
    """The workflow's gate: side by side at the profile's rounds; on inconclusive (exit 5) again with twice the
    rounds and runs, up to ``--retries`` times. Returns the last exit code."""
    from hvit_deploy.bench.profiles import load_profile

    prof = load_profile(args.profile)
    rounds, iters = prof.rounds, prof.iterations
    for attempt in range(args.retries + 1):
        rc = _one_gate(head, base, work, args, rounds, iters,
                       keep / f"try{attempt + 1}" if keep is not None and attempt else keep)
        if rc != 5:
            break
        rounds, iters = rounds * 2, iters * 2
    return rc


def _one_gate(head: Path, base: Path, work: Path, args, rounds: int, iters: int, keep: Path | None) -> int:
    env = {**os.environ, "PYTHONPATH": str(head), "HVIT_CACHE_DIR": str(work / "cache")}
    h, b = work / "head.json", work / "base.json"
    for p in (h, b):
        p.unlink(missing_ok=True)
    bench = [sys.executable, "-m", "hvit_deploy.cli.bench", "--profile", args.profile, "--models", args.model,
             "--rounds", str(rounds), "--iters", str(iters),
             "--against", str(base), "--out", str(h), "--against-out", str(b), "--no-progress"]
    if args.backends:
        bench += ["--backends", *args.backends]
    r = subprocess.run(bench, cwd=head, env=env, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        print(r.stderr[-1500:], file=sys.stderr)
        return 2
    cmp = [sys.executable, "-m", "hvit_deploy.cli.bench", "compare", str(b), str(h), "--threshold", args.threshold,
           *[a for spec in args.require_power for a in ("--require-power", spec)], "--format", "json"]
    r = subprocess.run(cmp, cwd=head, env=env, capture_output=True, text=True)
    if keep is not None:  # the gate's two results files and its verdict, for later analysis
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(h, keep / "head.json")
        shutil.copy(b, keep / "base.json")
        (keep / "verdict.json").write_text(r.stdout)
    if args.verbose:
        rows = json.loads(r.stdout)["rows"] if r.stdout.strip().startswith("{") else []
        for row in rows:
            print(f"    {row['backend']:12s} {row['verdict']:10s} ratio {row['ratio']} "
                  f"detectable {row['detectable_slowdown']} {'; '.join(row['notes'])[:200]}", file=sys.stderr)
    return r.returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientmod_xxs")
    ap.add_argument("--backends", nargs="+", help="default: the profile's")
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--threads", type=int, help="threads used to calibrate the slowdowns (default: the profile's)")
    ap.add_argument("--slowdowns", nargs="+", type=float, default=[0, 2, 5, 10], help="percent; 0 = A/A")
    ap.add_argument("--gates", type=int, default=10, help="gate runs per slowed candidate")
    ap.add_argument("--aa-gates", type=int, help="gate runs of the A/A candidate (default: --gates)")
    ap.add_argument("--load-gates", type=int, help="gate runs per candidate under load (default: as quiet)")
    ap.add_argument("--threshold", default="2%")
    ap.add_argument("--require-power", nargs="+", default=["5%"], help="as the workflow passes them")
    ap.add_argument("--load", action="store_true", help="also under a competing CPU load (one busy process per core)")
    ap.add_argument("--load-only", action="store_true", help="only the gates under load")
    ap.add_argument("--convs", nargs="+", metavar="PCT=N", default=[],
                    help="skip the calibration: N extra convolutions for the PCT%% candidate (as a calibration printed)")
    ap.add_argument("--retries", type=int, default=2, help="inconclusive: measure again with 2x, 4x the rounds, "
                    "as .github/workflows/latency.yml does (MAX_EXTRA); 0: single-shot gates")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--keep", help="keep every gate's results files and verdict under this folder")
    ap.add_argument("--analyse", metavar="DIR", help="only re-judge the gates kept in DIR under other statistics")
    ap.add_argument("--tune", action="store_true", help="only compare block lengths (A/A, in one process)")
    ap.add_argument("--tune-blocks", nargs="+", default=["2", "5", "10", "25", "50"])
    ap.add_argument("--tune-runs", type=int, default=600)
    ap.add_argument("--tune-repeats", type=int, default=6)
    args = ap.parse_args(argv)
    if args.threads is None:
        from hvit_deploy.bench.profiles import load_profile

        args.threads = load_profile(args.profile).threads
    if args.tune:
        return tune(args)
    if args.analyse:
        return analyse(Path(args.analyse), float(args.threshold.rstrip("%")) / 100)

    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hvit-gate-power-") as tmp:
        tmp = Path(tmp)
        base = copy_checkout(tmp / "base")
        given = {float(k): int(v) for k, v in (c.split("=") for c in args.convs)}
        todo = [x for x in args.slowdowns if x not in given]
        cal = calibrate(args.model, args.threads, todo) if any(x > 0 for x in todo) else {}
        cal.update({k: (v, float("nan")) for k, v in given.items()})
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
        for loaded in ([True] if args.load_only else [False, True] if args.load else [False]):
            want = {h: (args.load_gates if loaded and args.load_gates else
                        (args.aa_gates or args.gates) if h <= 0 else args.gates) for h in heads}
            burners = []
            if loaded:
                budget = sum(want.values()) * 900.0
                burners = [mp.Process(target=burn, args=(budget,), daemon=True) for _ in range(os.cpu_count() or 2)]
                for p in burners:
                    p.start()
            codes: dict[float, list[int]] = {h: [] for h in heads}
            walls: dict[float, list[float]] = {h: [] for h in heads}
            where = "load" if loaded else "quiet"
            try:
                # candidates take turns gate by gate, so a change in the machine over the session hits all alike
                for g in range(max(want.values())):
                    for s, head in heads.items():
                        if g >= want[s]:
                            continue
                        t0 = time.monotonic()
                        label = f"{where}-{'aa' if s <= 0 else f'slow{s:g}'}-{g + 1:03d}"
                        codes[s].append(run_gate(head, base, tmp, args, Path(args.keep) / label if args.keep else None))
                        walls[s].append(time.monotonic() - t0)
                        print(f"  {where} +{s:g}% gate {g + 1}/{want[s]}: exit {codes[s][-1]} in {walls[s][-1]:.0f} s",
                              file=sys.stderr, flush=True)
            except KeyboardInterrupt:
                print("interrupted: the table covers the gates run so far", file=sys.stderr)
            finally:
                for p in burners:
                    p.terminate()
            for s in heads:
                c, n = codes[s], len(codes[s])
                if not n:
                    continue
                flagged = sum(x == 1 for x in c)
                rows.append([("A/A" if s <= 0 else f"+{s:g}%") + (f" (timed +{cal[s][1]:.1f}%)" if s > 0 else ""),
                             where, n, f"{flagged}/{n} = {flagged / n:.0%}", sum(x == 5 for x in c),
                             sum(x not in (0, 1, 5) for x in c), f"{statistics.median(walls[s]):.0f}"])
    from tabulate import tabulate

    print(tabulate(rows, headers=["candidate", "machine", "gates", "flagged (exit 1)", "inconclusive (5)",
                                  "errors", "gate wall s (median)"]))
    print(f"gate: hvit-bench --profile {args.profile} --against BASE (model {args.model}), then compare "
          f"--threshold {args.threshold} --require-power {' '.join(args.require_power)}; {time.monotonic() - t_start:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
