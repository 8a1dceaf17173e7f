"""Does hvit-bench measure what the runtimes' own tools measure?

For one model, with the same artifacts, threads and input shape:

* OpenVINO: hvit-bench's ``openvino`` worker vs OpenVINO's ``benchmark_app`` on the same IR
  (``-d CPU -hint none -nstreams 1 -nthreads N -api sync -infer_precision f32 -niter K``);
* ONNX Runtime: hvit-bench's ``onnxruntime`` worker vs a plain ``InferenceSession.run`` loop on the same .onnx
  with the same session options (intra-op N, inter-op 1, sequential), in its own process.

The hvit-bench side is the real worker (sessions from ``hvit_deploy.runtimes``); the references are written
out here on purpose, without the project's runtime modules, since they are the independent check of them.

On a shared machine two measurements taken a minute apart differ by more than the thing being checked, so the
two sides are interleaved in short chunks: each round runs K timed calls in the hvit-bench worker (kept alive,
exactly the worker ``hvit-bench`` uses) and K in the reference, in alternating order, and gives one ratio of
medians. The figure is the median of the per-round ratios (1.000 = agreement), with its range.

    python benchmarks/agreement.py --model efficientmod_xxs --threads 2 --rounds 15 --chunk 50
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvit_deploy.bench.runner import Worker, worker_env  # noqa: E402

# a plain ONNX Runtime loop that stays alive and answers "n" with n latencies (ms), one JSON line per request
PLAIN_ORT = r"""
import json, sys, time, numpy as np, onnxruntime as ort
path, threads = sys.argv[1], int(sys.argv[2])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
feed = {inp.name: np.random.default_rng(0).standard_normal(inp.shape, dtype=np.float32)}
for line in sys.stdin:
    t = []
    for _ in range(int(line)):
        t0 = time.perf_counter()
        sess.run(None, feed)
        t.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps(t), flush=True)
"""


def median(x):
    return statistics.median(x)


def prepare(model: str, variant: str, threads: int, tmp: Path) -> dict:
    """Run hvit-bench once (short) so the artifacts exist and their paths and shapes are known."""
    out = tmp / "prep.json"
    cmd = [sys.executable, "-m", "hvit_deploy.cli.bench", "--models", model, "--backends", "onnxruntime", "openvino",
           "--variants", variant, "--threads", str(threads), "--iters", "20", "--rounds", "1", "--processes", "1",
           "--warmup", "5", "--no-progress", "--out", str(out)]
    r = subprocess.run(cmd, env=worker_env(threads), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"hvit-bench failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return {e["backend"]: e for e in json.loads(out.read_text())["results"]}


def hvit_worker(model: str, variant: str, backend: str, entry: dict, threads: int, warmup: int, log_dir: Path):
    w = Worker(worker_env(threads), f"agree-{backend}", log_dir)
    spec = {"model": model, "backend": backend, "variant": variant, "rewrite": variant == "rewritten",
            "threads": threads, "batch_size": 1, "input_size": None, "input_shape": entry["input_shape"],
            "checkpoint": None, "artifact": entry["artifact"]["path"],
            "warmup": {"min_runs": warmup, "window": 20, "tolerance": 0.03, "max_runs": 2000, "max_seconds": 30,
                       "round_runs": 0}}
    msg = w.request({"cmd": "setup", "spec": spec}, 600)   # the protocol-1 wire form; replies come back typed
    if msg.event != "ready":
        sys.exit(f"{backend} worker: {msg}")
    return w


def hvit_chunk(w: Worker, n: int) -> list[float]:
    msg = w.request({"cmd": "run", "n": n, "warm": 3}, 600)
    return [v / 1e6 for v in msg.ns]


def bapp_chunk(xml: str, shape: list[int], threads: int, n: int) -> float:
    cmd = [shutil.which("benchmark_app"), "-m", xml, "-d", "CPU", "-hint", "none", "-nstreams", "1", "-nthreads",
           str(threads), "-niter", str(n), "-api", "sync", "-infer_precision", "f32",
           "-shape", "[" + ",".join(map(str, shape)) + "]"]
    r = subprocess.run(cmd, env=worker_env(threads), capture_output=True, text=True)
    m = re.search(r"Median:\s+([0-9.]+)\s*ms", r.stdout)
    if r.returncode != 0 or not m:
        sys.exit(f"benchmark_app failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return float(m.group(1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientmod_xxs")
    ap.add_argument("--variant", default="rewritten", choices=("rewritten", "original"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--chunk", type=int, default=50, help="timed runs per side per round")
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args(argv)
    if shutil.which("benchmark_app") is None:
        sys.exit("benchmark_app not found (it comes with the openvino wheel)")

    print(f"agreement: {args.model} ({args.variant}), {args.threads} thread(s), {args.rounds} interleaved rounds "
          f"of {args.chunk} runs per side; load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="hvit-agree-") as tmp:
        tmp = Path(tmp)
        prep = prepare(args.model, args.variant, args.threads, tmp)
        ort_e, ov_e = prep["onnxruntime"], prep["openvino"]
        w_ort = hvit_worker(args.model, args.variant, "onnxruntime", ort_e, args.threads, args.warmup, tmp)
        w_ov = hvit_worker(args.model, args.variant, "openvino", ov_e, args.threads, args.warmup, tmp)
        plain = subprocess.Popen([sys.executable, "-c", PLAIN_ORT, ort_e["artifact"]["path"], str(args.threads)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=worker_env(args.threads))

        def plain_chunk(n: int) -> list[float]:
            plain.stdin.write(f"{n}\n")
            plain.stdin.flush()
            return json.loads(plain.stdout.readline())

        plain_chunk(args.warmup)
        ort_r, ov_r = [], []
        all_h_ort, all_plain, all_h_ov, all_bapp = [], [], [], []
        try:
            for r in range(args.rounds):
                if r % 2 == 0:
                    h = hvit_chunk(w_ort, args.chunk)
                    p = plain_chunk(args.chunk)
                    b = bapp_chunk(ov_e["artifact"]["path"], ov_e["input_shape"], args.threads, args.chunk)
                    o = hvit_chunk(w_ov, args.chunk)
                else:
                    p = plain_chunk(args.chunk)
                    h = hvit_chunk(w_ort, args.chunk)
                    o = hvit_chunk(w_ov, args.chunk)
                    b = bapp_chunk(ov_e["artifact"]["path"], ov_e["input_shape"], args.threads, args.chunk)
                ort_r.append(median(h) / median(p))
                ov_r.append(median(o) / b)
                all_h_ort += h
                all_plain += p
                all_h_ov += o
                all_bapp.append(b)
                print(f"  round {r + 1:2d}: onnxruntime {median(h):7.3f} vs plain run() {median(p):7.3f} ms -> "
                      f"{ort_r[-1]:.3f}   openvino {median(o):7.3f} vs benchmark_app {b:7.3f} ms -> {ov_r[-1]:.3f}",
                      flush=True)
        finally:
            w_ort.close()
            w_ov.close()
            plain.stdin.close()
            plain.wait(timeout=30)
    q = lambda x: sorted(x)[len(x) // 4], lambda x: sorted(x)[(3 * len(x)) // 4]  # noqa: E731
    print(f"ONNX Runtime  hvit-bench / plain InferenceSession.run: median of round ratios {median(ort_r):.3f} "
          f"(IQR {q[0](ort_r):.3f}-{q[1](ort_r):.3f}, range {min(ort_r):.3f}-{max(ort_r):.3f}); "
          f"pooled medians {median(all_h_ort):.3f} / {median(all_plain):.3f} ms")
    print(f"OpenVINO      hvit-bench / benchmark_app:               median of round ratios {median(ov_r):.3f} "
          f"(IQR {q[0](ov_r):.3f}-{q[1](ov_r):.3f}, range {min(ov_r):.3f}-{max(ov_r):.3f}); "
          f"pooled medians {median(all_h_ov):.3f} / {median(all_bapp):.3f} ms")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
