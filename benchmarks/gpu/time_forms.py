"""Time every GPU form of one model per family with hvit-bench, inside a device lease of about 10 minutes.

Forms (hvit-bench runtimes): torch-cuda (eager FP32), torch-cuda-fp16, torch-cuda-graphs (FP32),
torch-cuda-graphs-fp16, torch-cuda-graphs-bf16, and torch-compile-cuda (inductor; ``--compile-mode``,
default reduce-overhead: max-autotune's autotuning does not fit the budget). Three passes, each one hvit-bench
run whose results file is rewritten after every entry, so a run cut short keeps what finished:

1. ``forms.json``: the five eager/graph forms, models in priority order (one per family), leaving
   ``SWEEP_RESERVE_S`` of the budget to the sweep;
2. ``sweep.json``: the batch sweep (``hvit-bench --batch 1 2 4 8 16 32 64``) of one model in its best form only
   (``--sweep-model``, ``--sweep-form``; default EfficientMod-s in a CUDA graph in FP16), latency per batch and
   images/s, each batch in its own worker with its own captured graph;
3. ``compile.json``: torch-compile-cuda over the same models, with what is left of ``--budget-s`` (SIGTERM at
   the deadline: hvit-bench then writes the file as ``interrupted``).

``summary.md`` (median ms per model and form, then the sweep's table) is written after each pass. Without CUDA
(the dry run) one hvit-bench run covers all six forms and a second one the sweep, every entry is ``skipped``
with its reason, and the script ends 0::

    python benchmarks/gpu/time_forms.py --out gpu-results [--models efficientmod_s ...] [--budget-s 540]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODELS = ["efficientmod_s", "smt_t", "twins_pcpvt_s", "crossvit_9_dagger", "acmix_swin_t", "acmix_resnet26"]
FORMS = ["torch-cuda", "torch-cuda-graphs-fp16", "torch-cuda-graphs", "torch-cuda-graphs-bf16", "torch-cuda-fp16"]
COMPILE = "torch-compile-cuda"
COLUMNS = ["torch-cuda", "torch-cuda-fp16", "torch-cuda-graphs", "torch-cuda-graphs-fp16",
           "torch-cuda-graphs-bf16", COMPILE]
SWEEP_BATCHES = [1, 2, 4, 8, 16, 32, 64]
SWEEP_RESERVE_S = 150.0  # 7 workers (start-up, graph capture, 200 runs each; 64 images per run at the top)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-results")))
    ap.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of both passes")
    ap.add_argument("--compile-mode", default="reduce-overhead",
                    choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile pass")
    ap.add_argument("--sweep-model", default="efficientmod_s", help="the model of the batch sweep")
    ap.add_argument("--sweep-form", default="torch-cuda-graphs-fp16", help="the runtime of the batch sweep")
    ap.add_argument("--sweep-batches", nargs="+", type=int, default=SWEEP_BATCHES)
    ap.add_argument("--no-sweep", action="store_true", help="skip the batch sweep")
    ap.add_argument("--profile", type=Path, default=HERE / "gpu-forms.yaml")
    return ap.parse_args(argv)


def bench(args, backends: list[str], out: Path, seconds: float, models: list[str] | None = None,
          batches: list[int] | None = None) -> int:
    """One hvit-bench run, stopped with SIGTERM (results kept, status interrupted) after ``seconds``."""
    cmd = [sys.executable, "-m", "hvit_deploy.cli.bench", "--profile", str(args.profile), "--models",
           *(models or args.models), "--backends", *backends, "--out", str(out), "--no-progress"]
    if batches:
        cmd += ["--batch", *map(str, batches)]
    env = {**os.environ, "HVIT_COMPILE_MODE": args.compile_mode,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print("$", " ".join(cmd), flush=True)
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            return proc.wait(timeout=max(seconds, 1.0))
        except subprocess.TimeoutExpired:
            print(f"  budget spent: stopping {out.name} (finished entries are kept)", flush=True)
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()


def cuda_device_count() -> int:
    """CUDA devices the driver sees (0 without a driver), asked through libcuda directly: importing torch here
    would double the cost of the dry run, whose time is almost all Python start-up."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        n = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(n)) != 0:
            return 0
        return n.value
    except (OSError, AttributeError):
        return 0


def summary(paths: list[Path], sweep: Path | None = None) -> str:
    """A markdown table: median ms per model (rows) and form (columns); a skipped or failed entry says so. Then
    the sweep's table (batch, median ms per batch, images/s) when it ran."""
    cells: dict[tuple[str, str], str] = {}
    models: list[str] = []
    for p in paths:
        if not p.exists() or p == sweep:
            continue
        for e in json.loads(p.read_text())["results"]:  # hvit-bench's own file (load_results: hvit-bench compare)
            models += [e["model"]] if e["model"] not in models else []
            med = e.get("median_ms")
            cells[e["model"], e["backend"]] = f"{med:.3f}" if med is not None else e.get("status", "?")
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(cells.get((m, c), "—") for c in COLUMNS) + " |")
    if sweep is not None and sweep.exists():
        lines += ["", "| model | form | batch | median ms per batch | images/s | status |", "|---|---|---|---|---|---|"]
        for e in json.loads(sweep.read_text())["results"]:
            med, ips = e.get("median_ms"), e.get("images_per_s")
            lines.append(f"| {e['model']} | {e['backend']} | {e.get('batch_size') or 1} | "
                         f"{'' if med is None else f'{med:.3f}'} | {'' if ips is None else f'{ips:.0f}'} | "
                         f"{e.get('status', '?')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse(argv)
    args.out = args.out.resolve()  # hvit-bench runs from the checkout's root
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    compile_ = [] if args.no_compile else [COMPILE]
    sweep_out = None if args.no_sweep else args.out / "sweep.json"
    # (backends, results file, models, batches, seconds kept back for the passes after it)
    sweep = [([args.sweep_form], sweep_out, [args.sweep_model], args.sweep_batches, 0.0)] if sweep_out else []
    reserve = SWEEP_RESERVE_S if sweep_out else 0.0
    if cuda_device_count() > 0:
        passes = [(FORMS, args.out / "forms.json", None, None, reserve)] + sweep + (
            [(compile_, args.out / "compile.json", None, None, 0.0)] if compile_ else [])
    else:  # the dry run: one hvit-bench run (one probe) records every form as skipped, one more the sweep
        print("no CUDA device here: dry run, every entry will be skipped", flush=True)
        passes = [(FORMS + compile_, args.out / "forms.json", None, None, 0.0)] + sweep
    codes = []
    for backends, out, models, batches, keep in passes:
        left = deadline - time.monotonic()
        if left - keep < 20:
            print(f"no time left for {out.name}", flush=True)
            continue
        codes.append(bench(args, backends, out, left - keep, models=models, batches=batches))
        (args.out / "summary.md").write_text(summary([p[1] for p in passes], sweep=sweep_out))
    print((args.out / "summary.md").read_text(), flush=True)
    # 0: every entry ran or was skipped; 130 (stopped by the budget) is not a failure of this script
    return max((c for c in codes if c not in (0, 130)), default=0)


if __name__ == "__main__":
    sys.exit(main())
