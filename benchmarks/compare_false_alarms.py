"""How often does ``hvit-bench compare`` cry wolf, and how small a slowdown does it catch?

Records ``--runs`` independent hvit-bench runs of the same code on this machine (or reads ``--results`` files),
then, on those real samples:

* false alarms: every ordered pair of runs (i, j), i != j, is compared as baseline/candidate; any
  "regression" or "improvement" verdict is a false alarm (nothing changed between the runs);
* sensitivity: the candidate's samples are multiplied by 1 + s (s = 2 % ... 30 %) and the share of pairs
  flagged as a regression is the detection rate; the smallest s detected in >= 95 % of pairs is reported;
* for contrast, the false-alarm rate of a naive Mann-Whitney test on all raw samples (what the block design
  avoids: consecutive latencies are autocorrelated, so raw samples look far more certain than they are).

With ``--paired`` each run is a side-by-side run (``hvit-bench --against``) of this checkout against a copy of
itself, and the comparisons are the paired ones within each run (baseline = the copy); the slowdown is applied
to the candidate's samples and round medians.

    python benchmarks/compare_false_alarms.py --model efficientmod_xxs --runs 6 --profile ci
    python benchmarks/compare_false_alarms.py --model efficientmod_xxs --runs 4 --profile ci --paired
    python benchmarks/compare_false_alarms.py --results runs/*.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvit_deploy.bench.compare import compare_docs  # noqa: E402
from hvit_deploy.bench.results import load_results  # noqa: E402
from hvit_deploy.bench.schema import ResultsDoc  # noqa: E402

SLOWDOWNS = (0.02, 0.04, 0.05, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20, 0.30)
THRESHOLDS = (0.02, 0.05, 0.10)


def copy_of_checkout(dest: Path) -> Path:
    """A copy of this checkout's package, recipes and profiles: the same code under another root."""
    import shutil

    for name in ("hvit_deploy", "export_recipes", "profiles"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def record_runs(args, out_dir: Path) -> list[Path]:
    paths = []
    copy = copy_of_checkout(out_dir / "copy") if args.paired else None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for i in range(args.runs):
        out = out_dir / f"run{i:02d}.json"
        cmd = [sys.executable, "-m", "hvit_deploy.cli.bench", "--profile", args.profile, "--models", args.model,
               "--no-progress", "--out", str(out)]
        if copy is not None:
            cmd += ["--against", str(copy), "--against-out", str(out_dir / f"run{i:02d}-base.json")]
        for flag, val in (("--plugin", args.plugin), ("--variants", args.variant), ("--backends", args.backends), ("--threads", args.threads), ("--iters", args.iters),
                          ("--rounds", args.rounds)):
            if val:
                cmd += [flag, *map(str, val)] if isinstance(val, list) else [flag, str(val)]
        t0 = time.time()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"run {i} failed ({r.returncode}):\n{r.stderr[-3000:]}")
        doc = json.loads(out.read_text())
        meds = ", ".join(f"{e['backend']} {e['median_ms']:.3f}" for e in doc["results"] if e["status"] == "ok")
        print(f"  run {i + 1}/{args.runs}: {meds} ms  ({time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f})",
              flush=True)
        paths.append(out)
        if copy is not None:
            paths.append(out_dir / f"run{i:02d}-base.json")
    return paths


def scaled(doc: ResultsDoc, factor: float) -> ResultsDoc:
    out = doc.model_copy(deep=True)
    for e in out.results:
        if e.samples_ms:
            e.samples_ms = [v * factor for v in e.samples_ms]
            e.median_ms = float(np.median(e.samples_ms))
            e.round_medians_ms = [v * factor for v in e.round_medians_ms]
    return out


def naive_alarm_rate(docs: list[ResultsDoc], alpha: float) -> float:
    from scipy.stats import mannwhitneyu

    hits = total = 0
    for a, b in itertools.permutations(docs, 2):
        bm = {(e.model, e.backend): e for e in b.results if e.status == "ok"}
        for e in a.results:
            o = bm.get((e.model, e.backend))
            if e.status == "ok" and o:
                total += 1
                hits += mannwhitneyu(e.samples_ms, o.samples_ms).pvalue < alpha
    return hits / max(total, 1)


def evaluate(docs: list[ResultsDoc], threshold: float, alpha: float, paired: bool = False) -> dict:
    # paired: docs alternate head, base of one side-by-side run; compare base → head within each run
    pairs = ([(i + 1, i) for i in range(0, len(docs), 2)] if paired
             else list(itertools.permutations(range(len(docs)), 2)))
    alarms = total = 0
    ratios = []
    for i, j in pairs:
        cmp = compare_docs(docs[i], docs[j], threshold=threshold, alpha=alpha)
        for r in cmp.rows:
            if r.ratio is None:
                continue
            total += 1
            ratios.append(r.ratio)
            alarms += r.verdict in ("regression", "improvement")
    detection = {}
    for s in SLOWDOWNS:
        hit = n = 0
        for i, j in pairs:
            cmp = compare_docs(docs[i], scaled(docs[j], 1 + s), threshold=threshold, alpha=alpha)
            for r in cmp.rows:
                if r.ratio is not None:
                    n += 1
                    hit += r.verdict == "regression"
        detection[s] = hit / max(n, 1)
    reliable = next((s for s in SLOWDOWNS if detection[s] >= 0.95), None)
    half = next((s for s in SLOWDOWNS if detection[s] >= 0.5), None)
    return {"comparisons": total, "false_alarms": alarms, "rate": alarms / max(total, 1), "detection": detection,
            "reliable": reliable, "half": half, "ratios": ratios}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", nargs="+", help="existing results files (same code, same machine) instead of new runs")
    ap.add_argument("--model", default="efficientmod_xxs")
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--backends", nargs="+")
    ap.add_argument("--variant", choices=("rewritten", "original"))
    ap.add_argument("--plugin", help="passed to hvit-bench (models registered outside the package)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--iters", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--keep", metavar="DIR", help="keep the recorded runs here")
    ap.add_argument("--paired", action="store_true",
                    help="side-by-side runs against a copy of this checkout; compare within each run")
    args = ap.parse_args(argv)

    if args.results:
        paths = [Path(p) for p in args.results]
    else:
        out_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hvit-falsealarm-"))
        out_dir.mkdir(parents=True, exist_ok=True)
        print(f"recording {args.runs} runs of {args.model} (profile {args.profile}) in {out_dir}", flush=True)
        paths = record_runs(args, out_dir)
    docs = [load_results(p) for p in paths]
    run_ids = [(d.pairing or {}).get("run") for d in docs]
    paired = args.paired or (len(docs) % 2 == 0 and all(
        run_ids[i] and run_ids[i] == run_ids[i + 1] for i in range(0, len(docs), 2)))
    n_entries = sum(e.status == "ok" for e in docs[0].results)
    n_pairs = len(docs) // 2 if paired else len(docs) * (len(docs) - 1)
    print(f"\n{len(docs)} result files × {n_entries} entries; {n_pairs} "
          f"{'side-by-side runs (paired within each)' if paired else 'ordered pairs of runs'}; alpha {args.alpha}")
    for e in docs[0].results:
        if e.status == "ok":
            meds = [next(x.median_ms for x in d.results if x.backend == e.backend
                         and x.model == e.model and x.status == "ok") for d in docs]
            print(f"  {e.model}/{e.backend}: run medians {min(meds):.3f}-{max(meds):.3f} ms "
                  f"(between-run spread {(max(meds) / min(meds) - 1):.1%}), {e.iterations} runs in "
                  f"{e.rounds or 1} rounds")
    if not paired:
        print(f"naive Mann-Whitney on raw samples (p < {args.alpha}): flags "
              f"{naive_alarm_rate(docs, args.alpha):.0%} of same-code pairs")
    print()
    header = "threshold | false alarms | " + " | ".join(f"+{s:.0%}" for s in SLOWDOWNS) + " | reliably flagged (>=95%)"
    print(header)
    for t in THRESHOLDS:
        r = evaluate(docs, t, args.alpha, paired=paired)
        det = " | ".join(f"{r['detection'][s]:.0%}" for s in SLOWDOWNS)
        rel = f"+{r['reliable']:.0%}" if r["reliable"] is not None else "none tested"
        print(f"{t:>8.0%} | {r['false_alarms']}/{r['comparisons']} = {r['rate']:.1%} | {det} | {rel}")
        if t == 0.05:
            q = np.quantile(np.abs(np.log(r["ratios"])), [0.5, 0.95, 1.0])
            print(f"          (same-code ratio |log| median {q[0]:.3f}, 95th pct {q[1]:.3f}, max {q[2]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
