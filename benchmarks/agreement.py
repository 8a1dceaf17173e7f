"""Does hvit-bench measure what the runtimes' own tools measure?

For one model, alternately (A, B, A, B ... ``--repeats`` times, so drift of a shared machine hits both sides):

* OpenVINO: hvit-bench's ``openvino`` median vs ``benchmark_app`` on the *same* IR with the same settings
  (``-d CPU -hint none -nstreams 1 -nthreads N -niter K -api sync -infer_precision f32``);
* ONNX Runtime: hvit-bench's ``onnxruntime`` median vs a plain ``InferenceSession.run`` loop on the same
  .onnx with the same session options (intra-op N, inter-op 1, sequential), in its own process.

Prints both ratios (hvit-bench / reference; 1.00 = agreement) per repeat and their median.

    python benchmarks/agreement.py --model efficientmod_xxs --threads 2 --iters 300 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLAIN_ORT = r"""
import sys, time, numpy as np, onnxruntime as ort
path, threads, iters, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
x = np.random.default_rng(0).standard_normal(inp.shape, dtype=np.float32)
feed = {inp.name: x}
for _ in range(warm):
    sess.run(None, feed)
t = []
for _ in range(iters):
    t0 = time.perf_counter()
    sess.run(None, feed)
    t.append(time.perf_counter() - t0)
print(float(np.median(t)) * 1e3)
"""


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[v] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_hvit_bench(model: str, variant: str, threads: int, iters: int, warmup: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "hvit_deploy.cli.bench", "--models", model, "--backends", "onnxruntime", "openvino",
           "--variants", variant, "--threads", str(threads), "--iters", str(iters), "--rounds", "1",
           "--warmup", str(warmup), "--no-progress", "--out", str(out)]
    r = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"hvit-bench failed ({r.returncode}):\n{r.stderr[-3000:]}")
    doc = json.loads(out.read_text())
    return {e["backend"]: e for e in doc["results"]}


def run_benchmark_app(xml: str, shape: list[int], threads: int, iters: int) -> float:
    exe = shutil.which("benchmark_app")
    if exe is None:
        sys.exit("benchmark_app not found (it comes with the openvino wheel)")
    cmd = [exe, "-m", xml, "-d", "CPU", "-hint", "none", "-nstreams", "1", "-nthreads", str(threads),
           "-niter", str(iters), "-api", "sync", "-infer_precision", "f32",
           "-shape", "[" + ",".join(map(str, shape)) + "]"]
    r = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True)
    m = re.search(r"Median:\s+([0-9.]+)\s*ms", r.stdout)
    if r.returncode != 0 or not m:
        sys.exit(f"benchmark_app failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return float(m.group(1))


def run_plain_ort(onnx: str, threads: int, iters: int, warmup: int) -> float:
    r = subprocess.run([sys.executable, "-c", PLAIN_ORT, onnx, str(threads), str(iters), str(warmup)],
                       env=thread_env(threads), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"plain ORT loop failed:\n{r.stderr[-3000:]}")
    return float(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientmod_xxs")
    ap.add_argument("--variant", default="rewritten", choices=("rewritten", "original"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30, help="hvit-bench and plain-loop warm-up runs")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    print(f"agreement: {args.model} ({args.variant}), {args.threads} threads, {args.iters} runs, "
          f"{args.repeats} alternating repeats; load average {os.getloadavg()[0]:.1f}", flush=True)
    ov_ratios, ort_ratios = [], []
    with tempfile.TemporaryDirectory(prefix="hvit-agree-") as tmp:
        for rep in range(args.repeats):
            t0 = time.time()
            res = run_hvit_bench(args.model, args.variant, args.threads, args.iters, args.warmup,
                                 Path(tmp) / f"r{rep}.json")
            ov, ort_e = res["openvino"], res["onnxruntime"]
            if ov["status"] != "ok" or ort_e["status"] != "ok":
                sys.exit(f"hvit-bench entries failed: {ov.get('error')} / {ort_e.get('error')}")
            bapp = run_benchmark_app(ov["artifact"]["path"], ov["input_shape"], args.threads, args.iters)
            plain = run_plain_ort(ort_e["artifact"]["path"], args.threads, args.iters, args.warmup)
            ov_ratios.append(ov["median_ms"] / bapp)
            ort_ratios.append(ort_e["median_ms"] / plain)
            print(f"  repeat {rep + 1}: openvino hvit-bench {ov['median_ms']:.3f} ms vs benchmark_app {bapp:.3f} ms "
                  f"-> {ov_ratios[-1]:.3f}; onnxruntime hvit-bench {ort_e['median_ms']:.3f} ms vs plain "
                  f"InferenceSession.run {plain:.3f} ms -> {ort_ratios[-1]:.3f}  ({time.time() - t0:.0f} s)",
                  flush=True)
    print(f"OpenVINO ratio hvit-bench/benchmark_app: median {statistics.median(ov_ratios):.3f} "
          f"(range {min(ov_ratios):.3f}-{max(ov_ratios):.3f})")
    print(f"ONNX Runtime ratio hvit-bench/plain loop: median {statistics.median(ort_ratios):.3f} "
          f"(range {min(ort_ratios):.3f}-{max(ort_ratios):.3f})")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
