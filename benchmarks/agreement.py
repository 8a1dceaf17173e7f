"""Does hvit-bench measure what the runtimes' own tools measure?

For one model, with the same artifacts, threads and input shape:

* OpenVINO: hvit-bench's ``openvino`` worker vs OpenVINO's ``benchmark_app`` on the same IR
  (``-d CPU -hint none -nstreams 1 -nthreads N -api sync -infer_precision P -niter K``), where P is the precision
  the hvit-bench entry computed in, as OpenVINO read it back (``f32`` for rewritten/original, ``bf16`` for
  ``--variant bf16`` on a CPU with BF16), so the two time like for like; the precision benchmark_app itself
  reports (``INFERENCE_PRECISION_HINT`` of its compiled model) is printed beside each figure;
* ONNX Runtime: hvit-bench's ``onnxruntime`` worker vs a plain ``InferenceSession.run`` loop on the same .onnx
  with the same session options (intra-op N, inter-op 1, sequential), in its own process.

The hvit-bench side is the real worker (sessions from ``hvit_deploy.runtimes``); the references are written
out here on purpose, without the project's runtime modules, since they are the independent check of them.

On a shared machine two measurements taken a minute apart differ by more than the thing being checked, so the
two sides are interleaved in short chunks: each round runs K timed calls in the hvit-bench worker (kept alive,
exactly the worker ``hvit-bench`` uses) and K in the reference, in alternating order, and gives one ratio of
medians. The figure is the median of the per-round ratios (1.000 = agreement), with its range.

    python benchmarks/agreement.py --model efficientmod_xxs --threads 2 --rounds 15 --chunk 50
    python benchmarks/agreement.py --model efficientmod_xxs --variant bf16      # a CPU with BF16: OpenVINO only

``--variant bf16``: ONNX Runtime has no BF16 path on the CPU (its entry is skipped), so only OpenVINO is
compared; on a CPU without BF16 the entry is skipped and the script says so.
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

# hvit-bench's compute precision (read back from the session) as benchmark_app's -infer_precision
INFER_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}

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
    entries = {e["backend"]: e for e in json.loads(out.read_text())["results"]} if out.is_file() else {}
    ov = entries.get("openvino", {})
    if ov.get("status") == "skipped":
        sys.exit(f"hvit-bench skipped the openvino {variant} entry: {ov.get('reason')}")
    if r.returncode != 0 and not (variant == "bf16" and ov.get("status") == "ok"):
        sys.exit(f"hvit-bench failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return {b: e for b, e in entries.items() if e.get("status") == "ok"}


def hvit_worker(model: str, variant: str, backend: str, entry: dict, threads: int, warmup: int, log_dir: Path):
    w = Worker(worker_env(threads), f"agree-{backend}", log_dir)
    spec = {"model": model, "backend": backend, "variant": variant, "rewrite": variant != "original",
            "threads": threads, "batch_size": 1, "input_size": None, "input_shape": entry["input_shape"],
            "checkpoint": None, "artifact": entry["artifact"]["path"],
            "compute_precision": "bf16" if variant == "bf16" else None,
            "warmup": {"min_runs": warmup, "window": 20, "tolerance": 0.03, "max_runs": 2000, "max_seconds": 30,
                       "round_runs": 0}}
    msg = w.request({"cmd": "setup", "spec": spec}, 600)   # the protocol-1 wire form; replies come back typed
    if msg.event != "ready":
        sys.exit(f"{backend} worker: {msg}")
    return w


def hvit_chunk(w: Worker, n: int) -> list[float]:
    msg = w.request({"cmd": "run", "n": n, "warm": 3}, 600)
    return [v / 1e6 for v in msg.ns]


def bapp_chunk(xml: str, shape: list[int], threads: int, n: int, precision: str = "f32") -> tuple[float, str]:
    """benchmark_app's median (ms) over ``n`` runs with ``-infer_precision precision``, and the inference
    precision its compiled model reports (what it really computed in)."""
    cmd = [shutil.which("benchmark_app"), "-m", xml, "-d", "CPU", "-hint", "none", "-nstreams", "1", "-nthreads",
           str(threads), "-niter", str(n), "-api", "sync", "-infer_precision", precision,
           "-shape", "[" + ",".join(map(str, shape)) + "]"]
    r = subprocess.run(cmd, env=worker_env(threads), capture_output=True, text=True)
    m = re.search(r"Median:\s+([0-9.]+)\s*ms", r.stdout)
    if r.returncode != 0 or not m:
        sys.exit(f"benchmark_app failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return float(m.group(1)), reported_precision(r.stdout)


def reported_precision(log: str) -> str:
    """The INFERENCE_PRECISION_HINT benchmark_app prints for its compiled model, as a project word (fp32,
    bf16); "?" when it prints none."""
    m = re.search(r"INFERENCE_PRECISION_HINT:\s*(?:<Type: ')?([A-Za-z0-9_]+)", log)
    if not m:
        return "?"
    word = m.group(1).lower()
    return {"float32": "fp32", "f32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "float16": "fp16",
            "f16": "fp16"}.get(word, word)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientmod_xxs")
    ap.add_argument("--variant", default="rewritten", choices=("rewritten", "original", "bf16"))
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
        ort_e, ov_e = prep.get("onnxruntime"), prep["openvino"]
        hv_prec = ov_e.get("compute_precision") or "fp32"   # what hvit-bench's OpenVINO session read back
        bapp_prec = INFER_PRECISION.get(hv_prec, "f32")
        print(f"OpenVINO: hvit-bench computed in {hv_prec}; benchmark_app gets -infer_precision {bapp_prec}"
              + ("" if ort_e else f"; ONNX Runtime has no {args.variant} entry, so only OpenVINO is compared"),
              flush=True)
        w_ort = hvit_worker(args.model, args.variant, "onnxruntime", ort_e, args.threads, args.warmup, tmp) \
            if ort_e else None
        w_ov = hvit_worker(args.model, args.variant, "openvino", ov_e, args.threads, args.warmup, tmp)
        plain = subprocess.Popen([sys.executable, "-c", PLAIN_ORT, ort_e["artifact"]["path"], str(args.threads)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=worker_env(args.threads)) if ort_e else None

        def plain_chunk(n: int) -> list[float]:
            plain.stdin.write(f"{n}\n")
            plain.stdin.flush()
            return json.loads(plain.stdout.readline())

        if plain is not None:
            plain_chunk(args.warmup)
        ort_r, ov_r = [], []
        all_h_ort, all_plain, all_h_ov, all_bapp, bapp_seen = [], [], [], [], set()
        try:
            for r in range(args.rounds):
                h = p = None
                steps = ["ort", "ov"] if r % 2 == 0 else ["ov", "ort"]
                for step in steps:
                    if step == "ort" and w_ort is not None:
                        if r % 2 == 0:
                            h = hvit_chunk(w_ort, args.chunk)
                            p = plain_chunk(args.chunk)
                        else:
                            p = plain_chunk(args.chunk)
                            h = hvit_chunk(w_ort, args.chunk)
                    elif step == "ov":
                        if r % 2 == 0:
                            b, bp = bapp_chunk(ov_e["artifact"]["path"], ov_e["input_shape"], args.threads,
                                               args.chunk, bapp_prec)
                            o = hvit_chunk(w_ov, args.chunk)
                        else:
                            o = hvit_chunk(w_ov, args.chunk)
                            b, bp = bapp_chunk(ov_e["artifact"]["path"], ov_e["input_shape"], args.threads,
                                               args.chunk, bapp_prec)
                ov_r.append(median(o) / b)
                all_h_ov += o
                all_bapp.append(b)
                bapp_seen.add(bp)
                line = f"  round {r + 1:2d}: "
                if h is not None:
                    ort_r.append(median(h) / median(p))
                    all_h_ort += h
                    all_plain += p
                    line += f"onnxruntime {median(h):7.3f} vs plain run() {median(p):7.3f} ms -> {ort_r[-1]:.3f}   "
                print(line + f"openvino [{hv_prec}] {median(o):7.3f} vs benchmark_app [{bp}] {b:7.3f} ms -> "
                      f"{ov_r[-1]:.3f}", flush=True)
        finally:
            if w_ort is not None:
                w_ort.close()
            w_ov.close()
            if plain is not None:
                plain.stdin.close()
                plain.wait(timeout=30)
    q = lambda x: sorted(x)[len(x) // 4], lambda x: sorted(x)[(3 * len(x)) // 4]  # noqa: E731
    if ort_r:
        print(f"ONNX Runtime  hvit-bench / plain InferenceSession.run (both fp32): median of round ratios "
              f"{median(ort_r):.3f} (IQR {q[0](ort_r):.3f}-{q[1](ort_r):.3f}, range {min(ort_r):.3f}-"
              f"{max(ort_r):.3f}); pooled medians {median(all_h_ort):.3f} / {median(all_plain):.3f} ms")
    print(f"OpenVINO      hvit-bench [{hv_prec}] / benchmark_app [-infer_precision {bapp_prec}, reported "
          f"{'/'.join(sorted(bapp_seen))}]: median of round ratios {median(ov_r):.3f} "
          f"(IQR {q[0](ov_r):.3f}-{q[1](ov_r):.3f}, range {min(ov_r):.3f}-{max(ov_r):.3f}); "
          f"pooled medians {median(all_h_ov):.3f} / {median(all_bapp):.3f} ms")
    if bapp_seen != {hv_prec}:
        print(f"warning: benchmark_app reported {'/'.join(sorted(bapp_seen))}, hvit-bench {hv_prec}: not like for like")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
