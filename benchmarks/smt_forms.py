"""Side-by-side CPU latency of SMT's equal export forms (ONNX Runtime and OpenVINO, batch 1).

Every form is exported once, checked against eager PyTorch, then timed interleaved: each round runs every
(backend, form) pair for a few iterations, with the order rotated from round to round, so that drifting load on
a shared machine affects all forms alike. Printed per form: the median wall-clock latency and its interquartile
range as a share of the median (noise), and the median CPU time of the process during the call (at one thread the
CPU time is the compute itself and does not grow when other processes take the core away, so on a busy machine it
is the steadier figure); each with its ratio to the model as written and to the fastest form of the same backend.

    python benchmarks/smt_forms.py                      # smt_t, 1 thread, ORT + OpenVINO
    python benchmarks/smt_forms.py --threads 2 --rounds 30
    python benchmarks/smt_forms.py --model smt_s --backends openvino
    python benchmarks/smt_forms.py --part sam --rounds 40 --iters 10   # only the SAM blocks (where forms differ)

``--part sam`` times only the network's SAM attention modules (every one, each on an input of its own shape cut
from one flat input): the part where the forms differ, at a tenth of the run time, so that far more interleaved
samples fit in the same minutes.
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


class SamPart(torch.nn.Module):
    """Every SAM attention of ``model``, each on a slice of one flat input reshaped to its (1, N, C)."""

    def __init__(self, model: torch.nn.Module, shapes: dict[str, tuple[int, int, int, int]]):
        super().__init__()
        self.attns = torch.nn.ModuleList(model.get_submodule(n) for n in shapes)
        self.shapes = list(shapes.values())

    def forward(self, x):
        outs = []
        for attn, (N, C, H, W) in zip(self.attns, self.shapes):
            outs.append(attn(x[:, :N * C].reshape(1, N, C), H, W).reshape(-1))
        return torch.cat(outs)


def sam_shapes(model: torch.nn.Module, size) -> dict[str, tuple[int, int, int, int]]:
    from hvit_deploy.models.smt import Attention
    from hvit_deploy.rewrites.base import probe_shapes

    probe = probe_shapes(model, (1,) + tuple(size))
    return {n: (probe[n].args[0][1], probe[n].args[0][2], probe[n].args[1], probe[n].args[2])
            for n, m in model.named_modules() if isinstance(m, Attention) and m.ca_attention == 1}


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
    p.add_argument("--part", choices=["model", "sam"], default="model", help="whole network or its SAM blocks only")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    model = hvit_deploy.create_model(args.model, input_size=args.size)
    hvit_deploy.testing.randomize_norm_stats(model)
    size = model.hvit_input_size
    x = torch.randn((1,) + tuple(size))
    if args.part == "sam":
        shapes = sam_shapes(model, size)
        x = torch.randn(1, max(n * c for n, c, _, _ in shapes.values()))
    xn = x.numpy()

    def part(m):
        return m if args.part == "model" else SamPart(m, shapes).eval()

    with torch.no_grad():
        ref = part(model)(x).numpy()

    runners: dict[tuple[str, str], callable] = {}
    info: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for form in args.forms:
            names = FORMS[form]
            for backend in args.backends:
                rw_backend = "onnx" if backend == "onnxruntime" else "openvino"
                m = part(model if names is None else rewrite(model, rw_backend, names=names, input_size=size))
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
        cpu: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
        for r in range(args.rounds):
            order = keys[r % len(keys):] + keys[:r % len(keys)]
            for k in order:
                run = runners[k]
                for _ in range(args.iters):
                    c0, t0 = time.process_time(), time.perf_counter()
                    run(xn)
                    t1, c1 = time.perf_counter(), time.process_time()
                    times[k].append((t1 - t0) * 1e3)
                    cpu[k].append((c1 - c0) * 1e3)

    from tabulate import tabulate

    def iqr(v):
        q1, q3 = np.percentile(v, [25, 75])
        return f"{100 * (q3 - q1) / statistics.median(v):.0f}%"

    rows = []
    for backend in args.backends:
        wall = {f: statistics.median(times[(backend, f)]) for f in args.forms}
        cput = {f: statistics.median(cpu[(backend, f)]) for f in args.forms}
        for f in args.forms:
            row = [backend, f, info[(backend, f)]["nodes"], f"{info[(backend, f)]['diff']:.1e}"]
            for table, samples in ((wall, times), (cput, cpu)):
                base, best = table.get("as_written"), min(table.values())
                row += [f"{table[f]:.1f}", iqr(samples[(backend, f)]),
                        f"{table[f] / base:.3f}" if base else "-", f"{table[f] / best:.3f}"]
            rows.append(row)
    what = args.model + (" SAM blocks only" if args.part == "sam" else "")
    print(f"{what} @ {size[1]}, batch 1, {args.threads} thread(s), {args.rounds} rounds x {args.iters} runs, "
          f"interleaved; torch {torch.__version__}, cpu count {os.cpu_count()}")
    print(tabulate(rows, headers=["backend", "form", "nodes", "max|diff|", "wall ms", "IQR", "/written", "/fastest",
                                  "cpu ms", "IQR", "/written", "/fastest"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
