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
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _forms import PROTOCOL_NOTE, export_onnx, ort_runner, ov_runner, time_interleaved  # noqa: E402

import hvit_deploy  # noqa: E402
import hvit_deploy.testing  # noqa: E402
from hvit_deploy.rewriting import rewrite  # noqa: E402

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

    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for form in args.forms:
            names = FORMS[form]
            for backend in args.backends:
                fmt = "onnx" if backend == "onnxruntime" else "openvino"  # the export format the runtime runs
                m = part(model if names is None else rewrite(model, fmt, names=names, input_size=size))
                if backend == "onnxruntime":
                    run = ort_runner(export_onnx(m, x, Path(tmp) / f"{form}.onnx"), xn, args.threads, ref)
                else:
                    run = ov_runner(m, x, args.threads, ref)
                runners[(backend, form)] = run
                print(f"prepared {backend:11s} {form:32s} nodes {run.nodes:4d}  max|diff| vs eager {run.diff:.2e}",
                      file=sys.stderr)
        t = time_interleaved(runners, args.rounds, args.iters, args.warmup)
    times, cpu = t.wall, t.cpu

    from tabulate import tabulate

    def iqr(v):
        q1, q3 = np.percentile(v, [25, 75])
        return f"{100 * (q3 - q1) / statistics.median(v):.0f}%"

    rows = []
    for backend in args.backends:
        wall = {f: statistics.median(times[(backend, f)]) for f in args.forms}
        cput = {f: statistics.median(cpu[(backend, f)]) for f in args.forms}
        for f in args.forms:
            row = [backend, f, runners[(backend, f)].nodes, f"{runners[(backend, f)].diff:.1e}"]
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
    print(PROTOCOL_NOTE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
