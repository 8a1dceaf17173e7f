"""Where a model's time goes in ONNX Runtime (.onnx) or OpenVINO (.xml), as shares: by op type and by role.

    python benchmarks/op_shares.py exports/acmix_resnet26.onnx exports/acmix_resnet26-int8.onnx --runs 10
    python benchmarks/op_shares.py exports/acmix_resnet26.xml exports/acmix_resnet26-int8.xml

One profiled session per file (1 thread, after 3 warm-up runs): ONNX Runtime's own profiler, kernel times summed
by the op type ONNX Runtime ran (after its graph optimisations: QDQ groups fused into QLinearConv,
MatMulIntegerToFloat etc. show under those names); OpenVINO's performance counters (``PERF_COUNT``, f32 inference
precision), summed by layer type and the kernel that ran it (``Convolution jit_avx2_I8``). Both also by a role read
from the node's name (``--roles NAME=REGEX``, first match wins). Shares only: a profiled session is slower than a
timed one, and on a shared machine only the relative figures mean something; time speed-ups with hvit-bench.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_ROLES = ("unfold=unfold|Unfold|unfold_kernels", "attention=/att|rate|softmax|Softmax")


def profile(path: str, runs: int, threads: int, roles: list[tuple[str, str]]) -> dict:
    import numpy as np
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="hvit-ortshare-") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "p")
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape],
                                                       dtype=np.float32)
        for _ in range(3 + runs):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    t_from = starts[3] if len(starts) > 3 else 0
    by_op, by_role, n_op = collections.defaultdict(float), collections.defaultdict(float), collections.Counter()
    by_node = collections.defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e.get("ts", 0) < t_from:
            continue
        op = (e.get("args") or {}).get("op_name", "?")
        name = e["name"][: -len("_kernel_time")]
        d = float(e.get("dur", 0))
        by_op[op] += d
        n_op[op] += 1
        by_node[f"{op} {name}"] += d
        role = next((r for r, pat in roles if re.search(pat, name)), "other")
        by_role[role] += d
    total = sum(by_op.values())
    return {"total_us_per_run": total / runs, "by_op": {k: v / total for k, v in by_op.items()},
            "nodes": {k: v // runs for k, v in n_op.items()}, "by_role": {k: v / total for k, v in by_role.items()},
            "by_node": {k: v / total for k, v in by_node.items()}}


def profile_openvino(path: str, runs: int, threads: int, roles: list[tuple[str, str]]) -> dict:
    import numpy as np
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True,
                                                "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1})
    req = compiled.create_infer_request()
    shape = [d.get_length() for d in compiled.input(0).get_partial_shape()]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(3):
        req.infer({0: x})
    by_op, by_role, n_op = collections.defaultdict(float), collections.defaultdict(float), collections.Counter()
    by_node = collections.defaultdict(float)
    for _ in range(runs):
        req.infer({0: x})
        for info in req.get_profiling_info():
            if not (str(info.status).endswith("EXECUTED") and "NOT" not in str(info.status)):
                continue
            d = info.real_time.total_seconds() * 1e6
            op = f"{info.node_type} {info.exec_type}"
            by_op[op] += d
            n_op[op] += 1
            by_node[f"{op} {info.node_name}"] += d
            by_role[next((r for r, pat in roles if re.search(pat, info.node_name)), "other")] += d
    total = sum(by_op.values())
    return {"total_us_per_run": total / runs, "by_op": {k: v / total for k, v in by_op.items()},
            "nodes": {k: v // runs for k, v in n_op.items()}, "by_role": {k: v / total for k, v in by_role.items()},
            "by_node": {k: v / total for k, v in by_node.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx", nargs="+")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--nodes", type=int, default=0, help="also list this many nodes with the largest shares")
    ap.add_argument("--roles", nargs="*", default=list(DEFAULT_ROLES), metavar="NAME=REGEX")
    args = ap.parse_args(argv)
    roles = [tuple(r.split("=", 1)) for r in args.roles]
    for path in args.onnx:
        p = (profile_openvino if path.endswith(".xml") else profile)(path, args.runs, args.threads, roles)
        print(f"{path}: kernel shares ({args.runs} profiled runs, {args.threads} thread(s); shares only)")
        for op, s in sorted(p["by_op"].items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {s:6.1%}  {op} (x{p['nodes'][op]})")
        for n, sh in sorted(p["by_node"].items(), key=lambda kv: -kv[1])[: args.nodes]:
            print(f"  node {sh:6.1%}  {n}")
        print("  by role: " + ", ".join(f"{r} {s:.1%}" for r, s in sorted(p["by_role"].items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
