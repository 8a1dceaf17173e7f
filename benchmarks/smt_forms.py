"""Side-by-side CPU latency of SMT's equal export forms (ONNX Runtime and OpenVINO, batch 1).

Every form is exported once, checked against eager PyTorch, then timed interleaved: each round runs every
(backend, form) pair for a few iterations, with the order rotated from round to round, so that drifting load on
a shared machine affects all forms alike. Printed: median latency, the interquartile range as a share of the
median (noise), the ratio to the model as written and to the fastest form of the same backend.

    python benchmarks/smt_forms.py                      # smt_t, 1 thread, ORT + OpenVINO
    python benchmarks/smt_forms.py --threads 2 --rounds 30
    python benchmarks/smt_forms.py --model smt_s --backends openvino
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hvit_deploy  # noqa: E402
import hvit_deploy.testing  # noqa: E402
from hvit_deploy.rewrites import rewrite  # noqa: E402

BASE = ["smt.static_shapes", "smt.drop_modulator", "smt.fold_bn", "smt.fold_layerscale"]
FORMS: dict[str, list[str] | None] = {
    "as_written": None,                                                   # the official forward, traced
    "static_loop": BASE + ["smt.msa_slices"],                             # MHMC as in the paper: loop + cats
    "static_split": BASE + ["smt.mhmc_split", "smt.msa_slices"],          # 4 convs on slices + one stack
    "merged_transpose": BASE + ["smt.merge_mhmc", "smt.msa_slices"],      # one 9x9 conv + one rank-5 transpose
    "merged_interleaved": BASE + ["smt.merge_mhmc", "smt.fold_interleave", "smt.msa_slices"],  # one 9x9, no shuffle
    "merged_interleaved_msa_official": BASE + ["smt.merge_mhmc", "smt.fold_interleave"],
    "split_dense_proj0": BASE + ["smt.mhmc_split", "smt.dense_proj0", "smt.msa_slices"],    # 4 convs, concat, dense
    "merged_dense_proj0": BASE + ["smt.merge_mhmc", "smt.dense_proj0", "smt.msa_slices"],   # one 9x9, dense proj0
}


def export_onnx_file(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    import onnx
    import onnxsim

    from hvit_deploy.export.quiet import captured

    with captured(), torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=18, do_constant_folding=True,
                          input_names=["input"], output_names=["logits"])
        simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    if ok:
        onnx.save(simplified, str(path))


def ort_runner(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0], len(__import__("onnx").load(str(path)).graph.node)


def ov_runner(model: torch.nn.Module, x: torch.Tensor, threads: int):
    import openvino as ov

    from hvit_deploy.export.quiet import captured

    with captured(), torch.no_grad():
        ov_model = ov.convert_model(model, example_input=x, input=[tuple(x.shape)])
    nodes = sum(op.get_type_name() not in ("Parameter", "Result", "Constant") for op in ov_model.get_ordered_ops())
    compiled = ov.Core().compile_model(ov_model, "CPU", {
        "INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    out = compiled.output(0)
    return lambda a: np.array(request.infer({0: a})[out]), nodes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smt_t")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--iters", type=int, default=5, help="runs per form per round")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"], choices=["onnxruntime", "openvino"])
    p.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    args = p.parse_args(argv)

    torch.manual_seed(0)
    model = hvit_deploy.create_model(args.model, input_size=args.size)
    hvit_deploy.testing.randomize_norm_stats(model)
    size = model.hvit_input_size
    x = torch.randn((1,) + tuple(size))
    xn = x.numpy()
    with torch.no_grad():
        ref = model(x).numpy()

    runners: dict[tuple[str, str], callable] = {}
    info: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for form in args.forms:
            names = FORMS[form]
            for backend in args.backends:
                rw_backend = "onnx" if backend == "onnxruntime" else "openvino"
                m = model if names is None else rewrite(model, rw_backend, names=names, input_size=size)
                t0 = time.perf_counter()
                if backend == "onnxruntime":
                    path = Path(tmp) / f"{form}.onnx"
                    export_onnx_file(m, x, path)
                    run, nodes = ort_runner(path, args.threads)
                else:
                    run, nodes = ov_runner(m, x, args.threads)
                diff = float(np.abs(run(xn) - ref).max())
                info[(backend, form)] = {"nodes": nodes, "diff": diff, "prep_s": time.perf_counter() - t0}
                for _ in range(args.warmup):
                    run(xn)
                runners[(backend, form)] = run
                print(f"prepared {backend:11s} {form:32s} nodes {nodes:4d}  max|diff| vs eager {diff:.2e}",
                      file=sys.stderr)

        keys = list(runners)
        times: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
        round_medians: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
        for r in range(args.rounds):
            order = keys[r % len(keys):] + keys[:r % len(keys)]
            for k in order:
                run = runners[k]
                ts = []
                for _ in range(args.iters):
                    t0 = time.perf_counter()
                    run(xn)
                    ts.append((time.perf_counter() - t0) * 1e3)
                times[k] += ts
                round_medians[k].append(statistics.median(ts))

    from tabulate import tabulate

    rows = []
    for backend in args.backends:
        meds = {f: statistics.median(times[(backend, f)]) for f in args.forms}
        base = meds.get("as_written")
        best = min(meds.values())
        for f in args.forms:
            ts = np.array(times[(backend, f)])
            q1, q3 = np.percentile(ts, [25, 75])
            rm = round_medians[(backend, f)]
            rows.append([backend, f, info[(backend, f)]["nodes"], f"{info[(backend, f)]['diff']:.1e}",
                         f"{meds[f]:.2f}", f"{100 * (q3 - q1) / meds[f]:.1f}%",
                         f"{min(rm):.2f}-{max(rm):.2f}",
                         f"{meds[f] / base:.3f}" if base else "-", f"{meds[f] / best:.3f}"])
    print(f"{args.model} @ {size[1]}, batch 1, {args.threads} thread(s), {args.rounds} rounds x {args.iters} runs, "
          f"interleaved; torch {torch.__version__}, cpu count {os.cpu_count()}")
    print(tabulate(rows, headers=["backend", "form", "nodes", "max|diff|", "median ms", "IQR/med",
                                  "round medians", "vs as written", "vs fastest"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
