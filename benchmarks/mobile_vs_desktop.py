"""The on-device formats beside the desktop runtimes: ExecuTorch (.pte, XNNPACK) and LiteRT (.tflite, XNNPACK)
against ONNX Runtime and OpenVINO on this CPU, one model per family, at each thread count.

For each thread count, ONE ``hvit-bench`` run times every model on all four runtimes (the rewritten FP32 form, as
``hvit-export`` makes it) in the same interleaved rounds, spread over several worker processes, so a shared
machine's drift and process-to-process variation land on every runtime alike. The ratio printed is
ONNX Runtime's median over the runtime's (> 1: faster than ONNX Runtime) with its block-bootstrap interval over the
rounds (processes resampled first), as ``hvit-bench`` quotes its own same-run ratios; beside it the threads each
runtime read back, rounds and processes done, and the CPU's model and vector flags (XNNPACK and the desktop
runtimes pick their kernels by them).

    python benchmarks/mobile_vs_desktop.py                       # smallest variant of every family, 1 and 2 threads
    python benchmarks/mobile_vs_desktop.py --models efficientmod_xxs --threads 2 --iters 500

The default settings (5 models x 4 runtimes x 2 thread counts, 300 timed runs an entry in 6 rounds over 3
processes) are meant to finish in about 15 minutes on 2 cores once the artifacts are cached (the first run also
exports them: ExecuTorch's lowering is the slow one). A model a converter cannot take shows its one-line reason in
the table and the others still run.
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

BASELINE = "onnxruntime"
BACKENDS = ("onnxruntime", "openvino", "executorch", "litert")
# the CPU flags that decide which kernels XNNPACK, ONNX Runtime and OpenVINO pick
FLAGS_OF_NOTE = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
                 "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "i8mm", "sve")


def cpu_line() -> str:
    from hvit_deploy.bench.environment import cpu_model
    from hvit_deploy.utils.cpu import cpu_flags

    flags = cpu_flags()
    shown = [f for f in FLAGS_OF_NOTE if f in flags]
    return f"{cpu_model()}; flags: {' '.join(shown) or '(none of ' + ', '.join(FLAGS_OF_NOTE) + ')'}"


def _threads_read(e: dict) -> str:
    rb = e.get("threads_readback") or {}
    keys = [k for k in rb if "thread" in k.lower() and isinstance(rb[k], (int, float)) and not isinstance(rb[k], bool)
            and not k.startswith("os_threads_before")]
    return ", ".join(f"{k}={rb[k]}" for k in keys) or "-"


def rows_of(doc: dict, baseline: str = BASELINE) -> list[dict]:
    """One row per (model, runtime) of one run, with its ratio against ``baseline`` in that same run."""
    from hvit_deploy.bench.stats import speedup

    from hvit_deploy.bench.artifacts import fp32_form

    # one form per model: rewritten, or as written without a recipe (both may run when models are mixed)
    by = {(e["model"], e["backend"]): e for e in doc["results"] if e.get("variant") == fp32_form(e["model"])}
    rows = []
    for (model, backend), e in by.items():
        base = by.get((model, baseline))
        ok = e.get("status") == "ok"
        ratio = ""
        if ok and base is not None and base.get("status") == "ok":
            if backend == baseline:
                ratio = "1 (baseline)"
            else:
                s = speedup(base["samples_ms"], e["samples_ms"], reference_rounds=base.get("rounds"),
                            other_rounds=e.get("rounds"), reference_round_process=base.get("round_process"),
                            other_round_process=e.get("round_process"))
                ratio = f"{s['speedup']:.2f} ({s['ci'][0]:.2f}-{s['ci'][1]:.2f})"
        deleg = ((e.get("artifact") or {}).get("delegation") or {}).get("share")
        rows.append({
            "model": model, "runtime": backend, "threads": e.get("threads"),
            "median ms": f"{e['median_ms']:.3f}" if ok else "",
            "95% CI ms": "{:.3f}-{:.3f}".format(*e["median_ci_ms"]) if ok and e.get("median_ci_ms") else "",
            f"x {baseline} (95% CI)": ratio if ok else
            f"{e.get('status')}: {e.get('error') or e.get('reason') or ''}"[:90],
            "threads read back": _threads_read(e) if ok else "",
            "rounds": e.get("rounds_done", e.get("rounds")), "processes": e.get("processes"),
            "delegated": f"{deleg:.0%}" if deleg is not None else "",
        })
    order = {b: i for i, b in enumerate(BACKENDS)}
    rows.sort(key=lambda r: (r["model"], order.get(r["runtime"], 99)))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", help="default: the smallest variant of every family")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), help=f"default: {' '.join(BACKENDS)}")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--iters", type=int, default=300, help="timed runs per entry (default 300)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--warmup", type=int, help="warm-up runs before the settle check (hvit-bench --warmup)")
    ap.add_argument("--input-size", type=int, help="passed to hvit-bench (default: each model's own)")
    ap.add_argument("--out-dir", help="results files (default: mobile_vs_desktop-<date>-<time>)")
    ap.add_argument("--profile", help="hvit-bench profile to start from (flags above override it)")
    ap.add_argument("--plugin", action="append", help="passed to hvit-bench (models of your own)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON after the table")
    args = ap.parse_args(argv)

    from tabulate import tabulate

    from hvit_deploy.bench import plugins
    from hvit_deploy.bench.artifacts import fp32_form
    from hvit_deploy.bench.request import resolve_models
    from hvit_deploy.cli.bench import main as bench

    plugins.load(plugins.normalise(args.plugin or []))
    models = resolve_models(args.models)
    backends = list(dict.fromkeys([BASELINE, *args.backends]))
    out_dir = Path(args.out_dir or f"mobile_vs_desktop-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    # the rewritten form, or the model as written for a family without an export recipe (a --plugin model)
    forms = sorted({fp32_form(m) for m in models}, key=["rewritten", "original"].index)
    rows, codes, settings = [], [], []
    for t in args.threads:
        out = out_dir / f"results-t{t}.json"
        cmd = ["--models", *models, "--backends", *backends, "--variants", *forms, "--threads", str(t),
               "--iters", str(args.iters), "--rounds", str(args.rounds), "--processes", str(args.processes),
               "--out", out, "--no-progress", "--format", "csv"]
        if args.warmup is not None:
            cmd += ["--warmup", str(args.warmup)]
        if args.input_size:
            cmd += ["--input-size", str(args.input_size)]
        if args.profile:
            cmd += ["--profile", args.profile]
        for p in args.plugin or []:
            cmd += ["--plugin", p]
        print(f"mobile_vs_desktop: {t} thread(s): hvit-bench {' '.join(map(str, cmd))}", file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(sys.stderr):  # hvit-bench's own table: the one below replaces it
            codes.append(bench([str(c) for c in cmd]))
        if out.exists():
            doc = json.loads(out.read_text())
            rows += rows_of(doc)
            s = doc.get("settings") or {}
            settings.append(f"{t} thread(s): {s.get('iterations', args.iters)} runs an entry in "
                            f"{s.get('rounds', args.rounds)} interleaved rounds over {s.get('processes', args.processes)} "
                            f"processes ({out})")
    print(f"On-device formats beside ONNX Runtime and OpenVINO, batch 1, FP32 ({'/'.join(forms)}); each thread "
          f"count is one hvit-bench run with every runtime in the same interleaved rounds; x {BASELINE} > 1: faster than "
          f"{BASELINE}. Results: {out_dir}")
    print(f"CPU: {cpu_line()}")
    for s in settings:
        print(f"run: {s}")
    print(tabulate([list(r.values()) for r in rows], headers=list(rows[0]) if rows else [], tablefmt="github",
                   disable_numparse=True) if rows else "(no entries)")
    if args.json:
        print(json.dumps(rows, indent=2))
    return max(codes) if codes else 1


if __name__ == "__main__":
    sys.exit(main())
