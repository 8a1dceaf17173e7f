"""Time EfficientMod's equal modulation forms side by side on ONNX Runtime and OpenVINO (CPU, batch 1).

The paper (§3.4, Fig. 2) chose ``ctx.repeat`` over a reshape-based interaction because, on its Xeon, reshape was
~22% slower on CPU (EfficientMod-s, ONNX). This script measures, on this machine, every form the toolkit can
export with the same numbers:

  official     the model as built (fused SDPA, LayerScale Mul, x.size() reads, repeat)
  repeat       recipe prefix: LayerScale folded, explicit attention, static shapes; modulation by repeat (Tile)
  broadcast    prefix + value viewed as (r, C) times the context broadcast over r (no Tile, no copy)
  expand       prefix + context broadcast_to (..., r, C) and flattened (Expand instead of Tile)
  tiled        prefix + g's rows tiled r times (the context layer emits r·C channels; +(r-1)·C² MACs/pixel)
  nchw         prefix + broadcast + NCHW throughout with 1x1 convs (the paper's Core ML form, App. J)
  nchw_repeat  prefix + NCHW with repeat

Each form is checked against the eager model first, then exported once per backend (ONNX: TorchScript exporter,
opset 18, onnxsim; OpenVINO: ``openvino.convert_model`` on the rewritten module, f32). Timing is interleaved: in
every round each form runs ``--iters`` times, in an order rotated round by round, so slow drift of a shared
machine hits all forms alike. Printed per backend and thread count: the median latency of all calls, the spread
(p10-p90) of the calls, and each form's ratio to ``repeat`` taken round by round (median, interquartile range and
extremes over rounds).

    python benchmarks/efficientmod_forms.py                       # efficientmod_s, 1 thread, both backends
    python benchmarks/efficientmod_forms.py --model efficientmod_xxs --threads 1 2 --rounds 12 --iters 15
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PREFIX = ["efficientmod.fold_layerscale", "explicit_attention", "efficientmod.static_shapes"]
FORMS = {
    "official": None,
    "repeat": PREFIX,
    "broadcast": PREFIX + ["efficientmod.broadcast_modulation"],
    "expand": PREFIX + ["efficientmod.expand_modulation"],
    "tiled": PREFIX + ["efficientmod.tiled_context"],
    "nchw": PREFIX + ["efficientmod.broadcast_modulation", "efficientmod.nchw"],
    "nchw_repeat": PREFIX + ["efficientmod.nchw"],
}


def build_forms(model_name: str, forms: list[str]):
    import torch

    import hvit_deploy
    from hvit_deploy.testing import randomize_norm_stats

    torch.manual_seed(0)
    model = randomize_norm_stats(hvit_deploy.create_model(model_name))
    x = torch.randn(1, *model.hvit_input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    built = {}
    for form in forms:
        names = FORMS[form]
        m = model if names is None else hvit_deploy.rewrite(model, "onnx", names=names)
        with torch.no_grad():
            diff = float((m(x) - ref).abs().max())
        built[form] = m
        print(f"  {form:12s} max|diff| vs eager {diff:.2e}  rewrites: {', '.join(names or ['-'])}")
    return built, x, ref.numpy()


def onnx_sessions(built: dict, x, threads: int, workdir: Path, ref: np.ndarray):
    import onnx
    import onnxruntime as ort
    import torch

    try:
        import onnxsim
    except ImportError:  # pragma: no cover
        onnxsim = None
    runners = {}
    for form, m in built.items():
        path = workdir / f"{form}.onnx"
        if not path.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(m, (x,), str(path), opset_version=18, dynamo=False,
                                  input_names=["input"], output_names=["logits"])
            if onnxsim is not None:
                simplified, ok = onnxsim.simplify(onnx.load(str(path)))
                if ok:
                    onnx.save(simplified, str(path))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        out = sess.run(None, feed)[0]
        diff = float(np.abs(out - ref).max())
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        runners[form] = (lambda s=sess, f=feed: s.run(None, f), diff, "Tile" in ops)
    return runners


def openvino_sessions(built: dict, x, threads: int, ref: np.ndarray):
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
           "INFERENCE_PRECISION_HINT": "f32"}
    runners = {}
    for form, m in built.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(m, example_input=x)
        compiled = core.compile_model(ov_model, "CPU", cfg)
        request = compiled.create_infer_request()
        xn = x.numpy()
        out = request.infer({0: xn})[compiled.output(0)]
        diff = float(np.abs(out - ref).max())
        ops = {op.get_type_name() for op in ov_model.get_ops()}
        runners[form] = (lambda r=request, a=xn: r.infer({0: a}), diff, "Tile" in ops)
    return runners


def time_interleaved(runners: dict, rounds: int, iters: int, warmup: int):
    forms = list(runners)
    for form in forms:
        for _ in range(warmup):
            runners[form][0]()
    calls = {f: [] for f in forms}
    round_medians = {f: [] for f in forms}
    for r in range(rounds):
        order = forms[r % len(forms):] + forms[:r % len(forms)]
        for form in order:
            fn = runners[form][0]
            ts = []
            for _ in range(iters):
                t0 = time.perf_counter_ns()
                fn()
                ts.append((time.perf_counter_ns() - t0) / 1e6)
            calls[form] += ts
            round_medians[form].append(float(np.median(ts)))
    return calls, round_medians


def report(title: str, runners: dict, calls: dict, round_medians: dict, base: str = "repeat") -> None:
    print(f"\n{title}")
    print(f"  {'form':12s} {'median ms':>10s} {'p10-p90 ms':>16s} {'ratio to ' + base:>18s} {'rounds p25-p75':>16s} {'min-max':>12s}"
          f" {'max|diff|':>10s} {'Tile':>5s}")
    have_base = base in calls
    for form, ts in calls.items():
        med = float(np.median(ts))
        p10, p90 = np.percentile(ts, [10, 90])
        if have_base:
            ratios = np.array(round_medians[form]) / np.array(round_medians[base])
            ratio = f"{np.median(ratios):.3f}"
            q25, q75 = np.percentile(ratios, [25, 75])
            spread = f"{q25:.3f}-{q75:.3f}"
            extremes = f"{ratios.min():.2f}-{ratios.max():.2f}"
        else:
            ratio = spread = extremes = "-"
        _, diff, tile = runners[form]
        print(f"  {form:12s} {med:10.2f} {p10:7.2f}-{p90:<8.2f} {ratio:>18s} {spread:>16s} {extremes:>12s} {diff:10.1e}"
              f" {'yes' if tile else 'no':>5s}")
    fastest = min(calls, key=lambda f: float(np.median(calls[f])))
    print(f"  fastest: {fastest}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficientmod_s")
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"], choices=["onnxruntime", "openvino"])
    p.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--iters", type=int, default=10, help="calls per form per round")
    p.add_argument("--warmup", type=int, default=10, help="calls per form before timing")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(max(args.threads))
    import cpuinfo  # noqa: F401  (py-cpuinfo, for the header)
    import onnxruntime
    import openvino

    info = cpuinfo.get_cpu_info()
    print(f"{args.model}, batch 1, CPU {info.get('brand_raw', '?')} ({os.cpu_count()} logical cores), "
          f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}, torch {torch.__version__}")
    print(f"rounds {args.rounds} x {args.iters} calls per form, interleaved (order rotated per round), "
          f"warm-up {args.warmup}")
    if os.environ.get("OMP_NUM_THREADS"):
        print(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    built, x, ref = build_forms(args.model, args.forms)
    with tempfile.TemporaryDirectory(prefix="efficientmod_forms_") as tmp:
        for threads in args.threads:
            for backend in args.backends:
                if backend == "onnxruntime":
                    runners = onnx_sessions(built, x, threads, Path(tmp), ref)
                    title = f"ONNX Runtime CPU, intra_op_num_threads={threads}"
                else:
                    runners = openvino_sessions(built, x, threads, ref)
                    title = (f"OpenVINO CPU, INFERENCE_NUM_THREADS={threads}, NUM_STREAMS=1, "
                             f"PERFORMANCE_HINT=LATENCY, f32")
                calls, round_medians = time_interleaved(runners, args.rounds, args.iters, args.warmup)
                report(title, runners, calls, round_medians)
                del runners


if __name__ == "__main__":
    main()
