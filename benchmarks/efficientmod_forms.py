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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _forms import export_onnx, ort_runner, ov_runner, report, time_interleaved  # noqa: E402

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
                    runners = {f: ort_runner(export_onnx(m, x, Path(tmp) / f"{f}.onnx"), x, threads, ref)
                               for f, m in built.items()}
                    title = f"ONNX Runtime CPU, intra_op_num_threads={threads}"
                else:
                    runners = {f: ov_runner(m, x, threads, ref) for f, m in built.items()}
                    title = (f"OpenVINO CPU, INFERENCE_NUM_THREADS={threads}, NUM_STREAMS=1, "
                             f"PERFORMANCE_HINT=LATENCY, f32")
                timings = time_interleaved(runners, args.rounds, args.iters, args.warmup)
                report(title, runners, timings, base="repeat" if "repeat" in runners else args.forms[0], flag="Tile")
                del runners


if __name__ == "__main__":
    main()
