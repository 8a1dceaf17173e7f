"""The precision ladder of every CPU runtime here, one model per family, at 1 and 2 threads: which precision is
fastest on this machine while passing its gate.

For each thread count, ONE ``hvit-bench --precision auto`` run times every rung of every runtime (FP32; INT8,
exported as ``hvit-export --precision int8`` does it, calibration, accuracy gate and fallback included; BF16 where
the CPU has it and this build has the bf16 form) in the same interleaved rounds over several worker processes,
so each rung's ratio to its runtime's FP32 comes with a block-bootstrap interval that carries the machine's drift
and process-to-process variation. The table lists every rung: its median, ratio to FP32 [95% CI], gate figures,
size, whether it was picked, passed over (and why), failed its gate or could not be built here (and why), then
the INT8 verdicts ("INT8 does not pay here: ...") and the CPU's model and flags, rounds and processes.

    python benchmarks/precision_ladder.py                          # the whole table: ~20-25 min on 2 cores
    python benchmarks/precision_ladder.py --models smt_t --threads 2 --iters 60 --rounds 4

Default settings: the smallest variant of each family (hvit-bench's default models), runtimes torch,
onnxruntime, openvino and, when their runtime is installed, executorch and litert; 150 runs per rung in 6
rounds over 2 processes. The duration is an estimate from the models' known latencies (exports, INT8
calibration and gate included, done once and cached for the second thread count), not a measurement: shorten
with --models, --threads, --iters, --rounds. Without ``--calibration`` the INT8 rungs calibrate and gate on
images made from the two shipped photos (see benchmarks/int8_vs_fp32.py), and say so; with random weights the
gate's figures describe random-weight models.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CPU_RUNTIMES = ("torch", "onnxruntime", "openvino", "executorch", "litert")


def runtimes_here() -> list[str]:
    """The CPU runtimes whose packages are installed (executorch and litert come with the mobile extra)."""
    from hvit_deploy.runtimes import get_runtime

    out = []
    for name in CPU_RUNTIMES:
        decided, why = get_runtime(name).quick_check()
        if not (decided and why):
            out.append(name)
    return out


def _bench_cmd(args, models: list[str], backends: list[str], threads: int, calibration: str, out: Path) -> list:
    cmd = ["--models", *models, "--backends", *backends, "--precision", "auto", "--threads", str(threads),
           "--iters", str(args.iters), "--rounds", str(args.rounds), "--processes", str(args.processes),
           "--calibration", calibration, "--out", out, "--no-progress", "--format", "csv"]
    for flag, value in (("--warmup", args.warmup), ("--profile", args.profile), ("--eval-data", args.eval_data),
                        ("--calibration-size", args.calibration_size)):
        if value is not None:
            cmd += [flag, str(value)]
    for p in args.plugin or []:
        cmd += ["--plugin", p]
    for c in args.checkpoint or []:
        cmd += ["--checkpoint", c]
    return [str(c) for c in cmd]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", help="default: the smallest variant of every family")
    ap.add_argument("--backends", nargs="+", help="default: every CPU runtime installed here")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--iters", type=int, default=150, help="timed runs per rung")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--warmup", type=int, help="warm-up runs before the settle check (hvit-bench --warmup)")
    ap.add_argument("--calibration", help="calibration images (default: made from the two shipped photos)")
    ap.add_argument("--calibration-size", type=int, help="default: the recipe's (300, or all there are)")
    ap.add_argument("--eval-data", help="held-out images for the gate (default: split off the calibration folder)")
    ap.add_argument("--synthetic-images", type=int, default=80, help="images made when --calibration is not given")
    ap.add_argument("--out-dir", help="results files and made images (default: precision_ladder-<date>-<time>)")
    ap.add_argument("--checkpoint", action="append", metavar="[MODEL=]PATH", help="weights, passed to hvit-bench")
    ap.add_argument("--profile", help="hvit-bench profile to start from (default: the ladder profile)")
    ap.add_argument("--plugin", action="append", help="passed to hvit-bench (models of your own)")
    ap.add_argument("--json", action="store_true", help="print the ladders as JSON after the table")
    args = ap.parse_args(argv)
    args.profile = args.profile or "ladder"

    from int8_vs_fp32 import synthetic_calibration

    from hvit_deploy.bench import plugins
    from hvit_deploy.bench.ladder import format_ladders
    from hvit_deploy.bench.request import resolve_models
    from hvit_deploy.bench.results import load_results
    from hvit_deploy.cli.bench import main as bench
    from hvit_deploy.export.ladder import Ladder

    plugins.load(plugins.normalise(args.plugin or []))
    models = resolve_models(args.models)
    backends = args.backends or runtimes_here()
    out_dir = Path(args.out_dir or f"precision_ladder-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    notes, calibration = [], args.calibration
    if not calibration:
        per = max(1, args.synthetic_images // 2)
        calibration = str(synthetic_calibration(out_dir / "calibration", per))
        notes.append(f"calibration: {2 * per} images made from the two shipped photos in {calibration}; real "
                     "deployments calibrate and gate on their own images")
    ladders, codes, entries = [], [], []
    for t in args.threads:
        out = out_dir / f"results-t{t}.json"
        cmd = _bench_cmd(args, models, backends, t, calibration, out)
        print(f"precision_ladder: {t} thread(s): hvit-bench {' '.join(cmd)}", file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(sys.stderr):  # hvit-bench's own tables: the one below replaces them
            codes.append(bench(cmd))
        if out.exists():
            doc = load_results(out)
            ladders += [Ladder.model_validate(x) for x in doc.ladders or []]
            entries += doc.results
    print(f"Precision ladder, batch 1: each thread count is one hvit-bench --precision auto run (every rung of a "
          f"runtime in the same interleaved rounds); × fp32 > 1: faster than FP32. Results: {out_dir}")
    print(format_ladders(ladders, "md", entries) if ladders else "(no ladders)")
    for lad in ladders:
        print(f"pick: {lad.model} {lad.runtime} {lad.threads} thread(s): {lad.pick or 'none'}")
    for n in notes:
        print(f"note: {n}")
    if args.json:
        print(json.dumps([lad.to_json() for lad in ladders], indent=2))
    return max(codes) if codes else 1


if __name__ == "__main__":
    sys.exit(main())
