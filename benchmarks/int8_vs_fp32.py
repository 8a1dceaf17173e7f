"""INT8 against FP32 on ONNX Runtime and OpenVINO, side by side, with the accuracy gate's figures.

For each thread count, ONE ``hvit-bench`` run times every model's FP32 artifact (the rewritten form) and its INT8
artifact (``--variants rewritten int8``, exported the way ``hvit-export --precision int8`` does it: calibration,
accuracy gate, fallback) on both runtimes in the same interleaved rounds, spread over several worker processes,
so a shared machine's drift and process-to-process variation land on FP32 and INT8 alike. The latency ratio and
its confidence interval are the results' ``speedup_vs_fp32`` (block bootstrap over the rounds); the size ratio,
gate figures (top-1 agreement, mean cosine with eager FP32 on held-out images) and the layers kept in floating
point come from the INT8 artifact's export manifest.

    python benchmarks/int8_vs_fp32.py --calibration images/ --threads 1 2
    python benchmarks/int8_vs_fp32.py --models efficientmod_xxs smt_t --iters 2000 --rounds 10 --processes 5

Without ``--calibration`` it makes calibration images from the two photos shipped in ``hvit_deploy/assets/``
(crops, flips, colour jitter) and says so: that checks the machinery and times the INT8 graph, but real
deployments calibrate (and gate) on a few hundred images of their own domain. With random weights (no
``--checkpoint``) the gate's figures describe random-weight models, not released ones.
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

PHOTOS = ("chelsea.png", "coffee.png")


def synthetic_calibration(folder: Path, per_photo: int, seed: int = 0) -> Path:
    """``per_photo`` crops / flips / colour-jittered copies of each shipped photo (PNG), in ``folder``."""
    import numpy as np
    from PIL import Image, ImageEnhance, ImageOps

    from hvit_deploy.resources import asset

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        src = Image.open(asset(name)).convert("RGB")
        w, h = src.size
        for i in range(per_photo):
            s = rng.uniform(0.5, 1.0)
            cw, ch = int(w * s), int(h * s)
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((256, 256), Image.BILINEAR)
            if rng.random() < 0.5:
                img = ImageOps.mirror(img)
            img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
            img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
            img.save(folder / f"{Path(name).stem}_{i:03d}.png")
    return folder


def _ratio(s: dict | None) -> str:
    if not s:
        return "n/a"
    return f"{s['speedup']:.2f} ({s['ci'][0]:.2f}-{s['ci'][1]:.2f})"


def rows_of(doc: dict) -> list[dict]:
    """One row per (model, runtime) that has an INT8 entry, with its FP32 partner from the same run."""
    by = {(e["model"], e["backend"], e["variant"]): e for e in doc["results"]}
    rows = []
    for (model, backend, variant), e in by.items():
        if variant != "int8" or backend.startswith("torch"):
            continue
        fp = by.get((model, backend, e.get("fp32_variant", "rewritten")))
        q = (e.get("artifact") or {}).get("quantization") or {}
        fig = (q.get("gate") or {}).get("final") or {}
        ok = e.get("status") == "ok" and fp is not None and fp.get("status") == "ok"
        layers = q.get("layers_in_fp") or []
        rows.append({
            "model": model, "runtime": backend, "threads": e.get("threads"),
            "fp32 ms": f"{fp['median_ms']:.3f}" if ok else "",
            "int8 ms": f"{e['median_ms']:.3f}" if ok else "",
            "fp32/int8 (95% CI)": _ratio(e.get("speedup_vs_fp32")) if ok else
            f"{e.get('status')}: {e.get('error') or e.get('reason') or (fp or {}).get('error') or ''}"[:80],
            "size ratio": f"{q['size_ratio_vs_fp32']:.2f}" if q.get("size_ratio_vs_fp32") else "",
            # the gate's figure (near ties agree), the strict arg-max figure in brackets
            "top-1 agr (strict)": f"{fig.get('top1_agreement_within_tie', fig['top1_agreement']):.3f} "
            f"({fig['top1_agreement']:.3f})" if "top1_agreement" in fig else "",
            "cosine": f"{fig['mean_cosine']:.4f}" if "mean_cosine" in fig else "",
            "layers in FP": (f"{len(layers)}: " + ", ".join(layers[:3]) + (" ..." if len(layers) > 3 else ""))
            if layers else "0",
            "rounds": e.get("rounds_done", e.get("rounds")), "processes": e.get("processes"),
        })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", help="default: the smallest variant of every family")
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--iters", type=int, default=2000, help="timed runs per entry")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--warmup", type=int, help="warm-up runs before the settle check (hvit-bench --warmup)")
    ap.add_argument("--calibration", help="calibration images (default: made from the two shipped photos)")
    ap.add_argument("--calibration-size", type=int, help="default: the recipe's (300, or all there are)")
    ap.add_argument("--eval-data", help="held-out images for the gate (default: split off the calibration folder)")
    ap.add_argument("--synthetic-images", type=int, default=80, help="images made when --calibration is not given")
    ap.add_argument("--out-dir", help="results files and made images (default: int8_vs_fp32-<date>-<time>)")
    ap.add_argument("--checkpoint", action="append", metavar="[MODEL=]PATH",
                    help="weights, passed to hvit-bench (without them models are randomly initialised, afresh in "
                         "every export, and the gate's figures describe random-weight models)")
    ap.add_argument("--profile", help="hvit-bench profile to start from (flags above override it)")
    ap.add_argument("--plugin", action="append", help="passed to hvit-bench (models of your own)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON after the table")
    args = ap.parse_args(argv)

    from tabulate import tabulate

    from hvit_deploy.bench import plugins
    from hvit_deploy.bench.artifacts import fp32_form
    from hvit_deploy.cli.bench import main as bench
    from hvit_deploy.bench.request import resolve_models

    plugins.load(plugins.normalise(args.plugin or []))
    models = resolve_models(args.models)
    out_dir = Path(args.out_dir or f"int8_vs_fp32-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = []
    calibration = args.calibration
    if not calibration:
        per = max(1, args.synthetic_images // 2)
        calibration = str(synthetic_calibration(out_dir / "calibration", per))
        notes.append(f"calibration: {2 * per} images made from the two shipped photos (crops, flips, colour "
                     f"jitter) in {calibration}; real deployments calibrate and gate on their own images")
    fp32_forms = sorted({fp32_form(m) for m in models}, key=["rewritten", "original"].index)
    rows, codes = [], []
    for t in args.threads:
        out = out_dir / f"results-t{t}.json"
        cmd = ["--models", *models, "--backends", *args.backends, "--variants", *fp32_forms, "int8",
               "--threads", str(t), "--iters", str(args.iters), "--rounds", str(args.rounds),
               "--processes", str(args.processes), "--calibration", calibration, "--out", out, "--no-progress",
               "--format", "csv"]
        if args.calibration_size:
            cmd += ["--calibration-size", str(args.calibration_size)]
        if args.eval_data:
            cmd += ["--eval-data", args.eval_data]
        if args.warmup is not None:
            cmd += ["--warmup", str(args.warmup)]
        if args.profile:
            cmd += ["--profile", args.profile]
        for p in args.plugin or []:
            cmd += ["--plugin", p]
        for c in args.checkpoint or []:
            cmd += ["--checkpoint", c]
        print(f"int8_vs_fp32: {t} thread(s): hvit-bench {' '.join(map(str, cmd))}", file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(sys.stderr):  # hvit-bench's own table: the one below replaces it
            codes.append(bench([str(c) for c in cmd]))
        if out.exists():
            rows += rows_of(json.loads(out.read_text()))
    print(f"INT8 vs FP32, batch 1; each thread count is one hvit-bench run (FP32 and INT8 in the same "
          f"interleaved rounds); fp32/int8 > 1: INT8 faster. Results: {out_dir}")
    print(tabulate([list(r.values()) for r in rows], headers=list(rows[0]) if rows else [], tablefmt="github",
                   disable_numparse=True) if rows else "(no INT8 entries)")
    for n in notes:
        print(f"note: {n}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return max(codes) if codes else 1


if __name__ == "__main__":
    sys.exit(main())
