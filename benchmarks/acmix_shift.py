"""ACmix's conv path: tensor shifts vs one grouped convolution, side by side on ONNX Runtime and OpenVINO (CPU).

The paper (§3.3, Fig. 3) computes the shift-and-sum of the conv path with a grouped 3x3 convolution whose kernels
are one-hot shift kernels, instead of tensor shifts, and reports it as faster in practice. The toolkit has both
forms with the same numbers: ``conv_path="shift"`` (zero-filled shifts of the ``fc`` output in the 9 directions,
summed) and ``acmix.shift_to_group_conv`` (one grouped conv). This script times them at batch 1:

  --case module    the conv path alone (``fc`` output -> aggregated map) at the shapes it has in the models:
                   Swin-T stage 1 and 3, ResNet-26 layer 1 and the stride-2 block of layer 3
  --case swin_t    the whole Swin-T + ACmix, shift form vs group-conv form, both with the backend's recipe
  --case resnet26  the whole ResNet-26 + ACmix likewise (slow on CPU: the 7x7 sliding-window attention)
  --unfold         instead: ResNet-26's three equal unfold forms (nn.Unfold, 49 slices, one-hot depthwise conv),
                   the measurement behind the recipe's choice per backend, and nn.Unfold and the conv with
                   ``acmix.rpe_into_keys`` (one unfold of k - pe instead of two, equal up to rounding), and
                   ``acmix.halo_attention`` (no unfold: matmuls over query tiles; the recipes' form since)

Every form is checked against the eager model first. Export: ONNX with the TorchScript exporter (opset 18, onnxsim),
OpenVINO with ``openvino.convert_model`` on the module (f32 inference precision: on CPUs with bf16 units
OpenVINO otherwise runs in bf16). Timing is interleaved: each round runs every form ``--iters`` times, the order
rotated round by round, so the drift of a shared machine hits all forms alike. Printed: median latency, p10-p90
of the calls, and the ratio shift / group conv per round (median, interquartile range, extremes).

    python benchmarks/acmix_shift.py                            # --case module, 2 threads, both backends
    python benchmarks/acmix_shift.py --case swin_t --rounds 8 --iters 5
    python benchmarks/acmix_shift.py --unfold --rounds 5 --iters 2
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _forms import export_onnx, ort_runner, ov_runner, report, time_interleaved  # noqa: E402

# conv-path shapes in the models at 224: (name, channels, head_dim, H, W, stride)
MODULE_SHAPES = [
    ("swin_t stage1", 96, 32, 56, 56, 1),
    ("swin_t stage3", 384, 32, 14, 14, 1),
    ("resnet26 layer1", 64, 16, 56, 56, 1),
    ("resnet26 layer3.0", 256, 64, 28, 28, 2),
]


class ShiftPath:
    """The conv path's aggregation alone, shift form or grouped conv (built lazily: torch imported in main)."""

    @staticmethod
    def build(channels: int, head_dim: int, h: int, w: int, stride: int):
        import torch.nn as nn

        from hvit_deploy.models.acmix import _make_dep_conv, shift_sum

        class Shift(nn.Module):
            def forward(self, f):
                return shift_sum(f, channels, head_dim, 3, stride, hw=(h, w))

        conv = _make_dep_conv(head_dim, channels, 3, stride=stride)
        return {"shift": Shift().eval(), "group_conv": conv.eval()}


def build_cases(args):
    """{case title: ({form: module}, example input)} with every form checked against the first."""
    import torch

    import hvit_deploy
    from hvit_deploy.recipes import load_recipe
    from hvit_deploy.testing import randomize_norm_stats

    cases = {}
    if args.unfold:
        torch.manual_seed(0)
        model = randomize_norm_stats(hvit_deploy.create_model("acmix_resnet26"))
        base = ["acmix.static_shapes", "acmix.fold_rates", "acmix.precompute_pe"]
        forms = {"unfold": base, "slices": base + ["acmix.unfold_as_slices"], "conv": base + ["acmix.unfold_as_conv"],
                 "unfold+rpe": base + ["acmix.rpe_into_keys"],
                 "conv+rpe": base + ["acmix.rpe_into_keys", "acmix.unfold_as_conv"],
                 "sep+rpe": base + ["acmix.rpe_into_keys", "acmix.unfold_as_separable_conv"],
                 "halo": base + ["acmix.halo_attention"]}
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        cases["acmix_resnet26 unfold forms"] = (
            {k: hvit_deploy.rewrite(model, "onnx", names=v) for k, v in forms.items()}, x, model)
        return cases
    if args.case == "module":
        for title, c, hd, h, w, s in MODULE_SHAPES:
            forms = ShiftPath.build(c, hd, h, w, s)
            x = torch.randn(1, 9 * hd, h, w, generator=torch.Generator().manual_seed(1))
            cases[f"{title}: conv path of {9 * hd}x{h}x{w} -> {c}, stride {s}"] = (forms, x, None)
        return cases
    name = {"swin_t": "acmix_swin_t", "resnet26": "acmix_resnet26"}[args.case]
    torch.manual_seed(0)
    model = randomize_norm_stats(hvit_deploy.create_model(name, conv_path="shift"))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    recipe = load_recipe("acmix")
    for backend in args.backends:
        key = "onnx" if backend == "onnxruntime" else "openvino"
        names = [n for n in recipe.rewrites_for(key, name) if n != "acmix.shift_to_group_conv"]
        forms = {"shift": hvit_deploy.rewrite(model, key, names=names),
                 "group_conv": hvit_deploy.rewrite(model, key, names=names + ["acmix.shift_to_group_conv"])}
        cases[f"{name} (conv_path=shift), recipe rewrites for {key} [{backend}]"] = (forms, x, model)
    return cases


def check(forms: dict, x, model) -> np.ndarray:
    import torch

    with torch.no_grad():
        ref = (model or next(iter(forms.values())))(x)
        for form, m in forms.items():
            d = float((m(x) - ref).abs().max())
            print(f"  {form:12s} max|diff| vs eager {d:.2e} (max|eager| {float(ref.abs().max()):.3g})")
    return ref.numpy()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="module", choices=["module", "swin_t", "resnet26"])
    p.add_argument("--unfold", action="store_true", help="time ResNet-26's unfold forms instead")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"], choices=["onnxruntime", "openvino"])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--iters", type=int, default=20, help="calls per form per round")
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)

    import cpuinfo
    import onnxruntime
    import openvino
    import torch

    torch.set_num_threads(args.threads)
    print(f"batch 1, CPU {cpuinfo.get_cpu_info().get('brand_raw', '?')} ({os.cpu_count()} logical cores), "
          f"{args.threads} threads; onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}, "
          f"torch {torch.__version__}")
    print(f"{args.rounds} rounds x {args.iters} calls per form, interleaved (order rotated per round), "
          f"warm-up {args.warmup}")
    base = "unfold" if args.unfold else "group_conv"
    with tempfile.TemporaryDirectory(prefix="acmix_shift_") as tmp:
        for title, (forms, x, model) in build_cases(args).items():
            print(f"\n{title}")
            ref = check(forms, x, model)
            for backend in args.backends:
                if "[" in title and f"[{backend}]" not in title:
                    continue  # whole-model cases are rewritten per backend
                if backend == "onnxruntime":
                    runners = {f: ort_runner(export_onnx(m, x, Path(tmp) / f"{f}.onnx"), x, args.threads, ref)
                               for f, m in forms.items()}
                    head = f"  ONNX Runtime CPU, intra_op_num_threads={args.threads}"
                else:
                    runners = {f: ov_runner(m, x, args.threads, ref) for f, m in forms.items()}
                    head = f"  OpenVINO CPU, INFERENCE_NUM_THREADS={args.threads}, LATENCY, f32"
                report(head, runners, time_interleaved(runners, args.rounds, args.iters, args.warmup), base)


if __name__ == "__main__":
    main()
