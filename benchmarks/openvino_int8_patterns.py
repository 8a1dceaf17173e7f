"""Which tensors an OpenVINO INT8 model quantizes badly, and what each NNCF setting does to the accuracy gate.

For a validated FP32 OpenVINO IR (``hvit-export NAME --to openvino``) and a calibration folder, each named setting
below is quantized with the project's own ``quantize_openvino`` (NNCF), run on the held-out images and judged
with the project's gate (``hvit_deploy.quantize.gate``) against the FP32 IR's logits (the FP32 IR is validated
against eager FP32 to 1e-4, so it stands in for eager here). For the first setting (or ``--noise``) it also
prints the quantization noise of every FakeQuantize (``||FQ(x) - x||^2 / ||x||^2`` on the held-out images) and the
error each op type and block accumulates against the FP32 IR, grouped by the op that consumes the quantized
tensor: that says which pattern carries the error.

    hvit-export smt_t --to openvino --out exports
    python benchmarks/openvino_int8_patterns.py exports/smt_t.xml smt_t --calibration images/ \
        --settings base tq_fx sq0.5 --noise

``--exact`` also judges each INT8 IR with exact quantization arithmetic: every FakeQuantize rewritten as the same
rounding in plain float ops (:func:`exact_arithmetic`), which OpenVINO's low-precision transformations do not turn
into int8 kernels. Those are the numerics of a CPU with VNNI (or AMX), whose int8 dot products add into int32
exactly, seen from a CPU without it, whose AVX2 kernels add pairs of 8-bit products in int16 and can saturate (the
reason NNCF's overflow fix gives such CPUs 7-bit weights): the gate a VNNI target would see, measured here.

No timing: the figures are accuracy figures only.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (QuantizationOptions overrides, extra ignored-scope settings)
SETTINGS = {
    "base": ({}, {}),                                            # the recipe as it is
    "default_type": ({"model_type": "default"}, {}),
    "sq_off": ({"smooth_quant_alpha": -1.0}, {}),
    "sq0.3": ({"smooth_quant_alpha": 0.3}, {}),
    "sq0.5": ({"smooth_quant_alpha": 0.5}, {}),
    "sq0.7": ({"smooth_quant_alpha": 0.7}, {}),
    "fix_off": ({"openvino_overflow_fix": "disable"}, {}),
    "fix_first": ({"openvino_overflow_fix": "first_layer"}, {}),
    "performance": ({"preset": "performance"}, {}),
    "slow_bias": ({"fast_bias_correction": False}, {}),
}


def ignored_patterns(spec: str) -> dict:
    """``--ignore NAME=REGEX[,REGEX]`` → a setting that keeps the nodes matching the patterns in FP."""
    name, _, pats = spec.partition("=")
    return {name: ({}, {"patterns": pats.split(",")})}


def load(args):
    from hvit_deploy.preprocess import preprocessing_for
    from hvit_deploy.quantize.calibration import split_sets
    from hvit_deploy.recipes import recipe_or_default
    from hvit_deploy.registry import get_spec

    recipe = recipe_or_default(get_spec(args.model).family)
    q = recipe.quantization
    calib, held = split_sets(args.calibration, size=args.calibration_size or q.calibration_size,
                             eval_data=args.eval_data, holdout=q.holdout_size,
                             preprocess=preprocessing_for(args.model))
    return q, calib, held


def run_ir(core, xml, arrays, outputs=None):
    import openvino as ov

    model = core.read_model(str(xml))
    if outputs:
        model.add_outputs([o for o in outputs])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    res = []
    for x in arrays:
        r = req.infer({0: x[None]})
        res.append({k.get_any_name() if k.names else str(k): v.copy() for k, v in r.items()})
    del ov
    return res


def fq_noise(core, int8_xml, held) -> list[dict]:
    """Per FakeQuantize: its input's noise ``||FQ(x)-x||^2/||x||^2`` and the op that consumes its output."""
    import openvino as ov

    model = core.read_model(str(int8_xml))
    fqs = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    rows, outs = [], []
    for fq in fqs:
        src = fq.input_value(0)
        if src.get_node().get_type_name() == "Constant":   # weights: not an activation
            continue
        consumers = [t.get_node() for t in fq.output(0).get_target_inputs()]
        cons = consumers[0]
        rows.append({"fq": fq.get_friendly_name(), "input": src.get_node().get_friendly_name(),
                     "input_type": src.get_node().get_type_name(), "consumer": cons.get_friendly_name(),
                     "consumer_type": cons.get_type_name()})
        outs += [src, fq.output(0)]
    model.add_outputs(outs)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    num = np.zeros(len(rows))
    den = np.zeros(len(rows))
    peak = np.zeros(len(rows))
    nout = len(compiled.outputs) - len(outs)
    for x in held[: 8]:
        req.infer({0: x[None]})
        for i in range(len(rows)):
            a = req.get_output_tensor(nout + 2 * i).data
            b = req.get_output_tensor(nout + 2 * i + 1).data
            num[i] += float(((b - a) ** 2).sum())
            den[i] += float((a ** 2).sum())
            peak[i] = max(peak[i], float(np.abs(a).max() / (np.sqrt((a ** 2).mean()) + 1e-30)))
    for i, r in enumerate(rows):
        r["noise"] = num[i] / max(den[i], 1e-30)
        r["peak_to_rms"] = peak[i]
    del ov
    return rows


TRACED = ("Add", "MVN", "MatMul", "Convolution", "GroupConvolution", "Multiply", "Gelu", "ReduceMean")


def trace(core, fp32_xml, int8_xml, held, images: int = 6) -> list[dict]:
    """Relative error ``||int8 - fp32||^2 / ||fp32||^2`` of every traced op's output (same friendly name in both
    models), in the FP32 model's order: where the error enters and how it grows."""
    fp = core.read_model(str(fp32_xml))
    q = core.read_model(str(int8_xml))
    qops = {op.get_friendly_name(): op for op in q.get_ordered_ops()}
    pairs = [(op, qops[op.get_friendly_name()]) for op in fp.get_ordered_ops()
             if op.get_type_name() in TRACED and op.get_friendly_name() in qops]
    fp.add_outputs([a.output(0) for a, _ in pairs])
    q.add_outputs([b.output(0) for _, b in pairs])
    cf = core.compile_model(fp, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    cq = core.compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    nf = len(cf.model_outputs) - len(pairs)
    nq = len(cq.model_outputs) - len(pairs)
    num, den = np.zeros(len(pairs)), np.zeros(len(pairs))
    for x in held[:images]:
        cf.infer({0: x[None]})
        cq.infer({0: x[None]})
        for i in range(len(pairs)):
            a = cf.get_output_tensor(nf + i).data
            b = cq.get_output_tensor(nq + i).data
            num[i] += float(((b - a) ** 2).sum())
            den[i] += float((a ** 2).sum())
    return [{"op": a.get_friendly_name(), "type": a.get_type_name(), "rel_err": num[i] / max(den[i], 1e-30)}
            for i, (a, _) in enumerate(pairs)]


def exact_arithmetic(model) -> int:
    """Rewrite every FakeQuantize of the OpenVINO ``model`` (in place) as its definition in float ops:
    ``round(clip((x - il) / (ih - il), 0, 1) * (levels - 1)) / (levels - 1) * (oh - ol) + ol`` (ties to even, as
    OpenVINO's reference FakeQuantize). OpenVINO then computes in fp32 on fake-quantized values, so no int8 kernel
    (and no int16 saturation) is involved. Returns how many were rewritten."""
    import openvino.opset13 as ops

    n = 0
    for fq in list(model.get_ordered_ops()):
        if fq.get_type_name() != "FakeQuantize":
            continue
        x, il, ih, ol, oh = (fq.input_value(i) for i in range(5))
        steps = ops.constant(np.float32(fq.get_attributes()["levels"] - 1))
        t = ops.divide(ops.subtract(x, il), ops.subtract(ih, il))
        t = ops.minimum(ops.maximum(t, ops.constant(np.float32(0.0))), ops.constant(np.float32(1.0)))
        r = ops.round(ops.multiply(t, steps), "half_to_even")
        y = ops.add(ops.multiply(ops.divide(r, steps), ops.subtract(oh, ol)), ol)
        fq.output(0).replace(y.output(0))
        n += 1
    return n


def run_exact(core, xml, arrays) -> np.ndarray:
    """Logits of the INT8 IR ``xml`` under exact quantization arithmetic (:func:`exact_arithmetic`)."""
    model = core.read_model(str(xml))
    exact_arithmetic(model)
    req = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    return np.concatenate([req.infer({0: x[None]})[0].copy() for x in arrays]).reshape(len(arrays), -1)


def block_of(name: str) -> str:
    m = re.search(r"__module\.(block\d+\.\d+|patch_embed\d+|head|norm\d+)", name)
    return m.group(1) if m else "other"


def pattern_of(row: dict) -> str:
    """A readable pattern name for a quantized tensor of SMT (falls back to the consumer's module path)."""
    c, i = row["consumer"], row["input"]
    cm = re.sub(r"^__module\.(block\d+\.\d+\.|patch_embed\d+\.)?", "", c.split("/aten::")[0])
    return f"{row['consumer_type']} {cm} <- {row['input_type']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("xml", help="validated FP32 OpenVINO IR")
    ap.add_argument("model", help="model name (for the recipe and preprocessing)")
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--eval-data")
    ap.add_argument("--calibration-size", type=int)
    ap.add_argument("--settings", nargs="+", default=["base"], help=f"of {', '.join(SETTINGS)} or an --ignore name")
    ap.add_argument("--ignore", action="append", default=[], metavar="NAME=REGEX[,REGEX]",
                    help="a setting that keeps the nodes whose names match in FP (nncf IgnoredScope patterns)")
    ap.add_argument("--noise", action="store_true", help="per-FakeQuantize noise table for the first setting")
    ap.add_argument("--trace", action="store_true", help="error growth through the network, for every setting")
    ap.add_argument("--exact", action="store_true",
                    help="also judge each INT8 IR with exact quantization arithmetic (a VNNI CPU's numerics)")
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args(argv)

    import openvino as ov

    from hvit_deploy.quantize.gate import gate_failures, gate_figures
    from hvit_deploy.quantize.openvino_int8 import quantize_openvino

    settings = dict(SETTINGS)
    for s in args.ignore:
        settings.update(ignored_patterns(s))
    q, calib, held = load(args)
    core = ov.Core()
    ref = np.concatenate([r[next(iter(r))] for r in run_ir(core, args.xml, held.arrays)]).reshape(len(held.arrays), -1)
    print(f"{args.model}: {len(calib.arrays)} calibration, {len(held.arrays)} held-out images; gate "
          f"top-1 >= {q.gate.min_top1_agreement}, top-5 >= {q.gate.min_top5_agreement}, "
          f"cosine >= {q.gate.min_mean_cosine} (near ties within {q.gate.tie_logit_margin})", flush=True)
    report = {}
    with tempfile.TemporaryDirectory(prefix="hvit-ovpat-") as tmp:
        for k, name in enumerate(args.settings):
            over, extra = settings[name]
            opts = q.model_copy(update=over)
            out = Path(tmp) / f"{name}.xml"
            ignored = None
            if extra.get("patterns"):
                names = [op.get_friendly_name() for op in core.read_model(args.xml).get_ordered_ops()
                         if any(re.search(p, op.get_friendly_name()) for p in extra["patterns"])]
                ignored = names
            info = quantize_openvino(Path(args.xml), out, calib.arrays, 1, opts, ignored)
            res = run_ir(core, out, held.arrays)
            logits = np.concatenate([r[next(iter(r))] for r in res]).reshape(len(held.arrays), -1)
            fig = gate_figures(ref, logits, held.labels, q.gate.tie_logit_margin)
            bad = gate_failures(fig, q.gate)
            report[name] = {"settings": info, "figures": fig, "failures": bad, "ignored_nodes": len(ignored or [])}
            print(f"{name:>14}: top-1 {fig['top1_agreement_within_tie']:.3f} (strict {fig['top1_agreement']:.3f}) "
                  f"top-5 {fig['top5_agreement_within_tie']:.3f} cosine {fig['mean_cosine']:.4f} "
                  f"(min {fig['min_cosine']:.4f}) FQ {info['fake_quantize_ops']} ignored {len(ignored or [])} "
                  f"{'PASS' if not bad else 'fail'}", flush=True)
            if args.exact:
                efig = gate_figures(ref, run_exact(core, out, held.arrays), held.labels, q.gate.tie_logit_margin)
                ebad = gate_failures(efig, q.gate)
                report[name]["exact"] = {"figures": efig, "failures": ebad}
                print(f"{'exact':>14}: top-1 {efig['top1_agreement_within_tie']:.3f} (strict "
                      f"{efig['top1_agreement']:.3f}) top-5 {efig['top5_agreement_within_tie']:.3f} cosine "
                      f"{efig['mean_cosine']:.4f} (min {efig['min_cosine']:.4f}) {'PASS' if not ebad else 'fail'}"
                      "  (exact int arithmetic: a VNNI CPU's numerics)", flush=True)
            if args.trace:
                tr = trace(core, args.xml, out, held.arrays)
                report[name]["trace"] = tr
                print("\nerror growth (rel. squared error vs the FP32 IR), last traced op of each block and the "
                      "ops where it grows most:")
                last = {}
                for r in tr:
                    last[block_of(r["op"])] = r
                for b, r in last.items():
                    print(f"  {b:>14}: {r['rel_err']:.2e}  ({r['type']} {r['op']})")
                jumps = [(tr[i]["rel_err"] / max(tr[i - 1]["rel_err"], 1e-12), tr[i]) for i in range(1, len(tr))]
                by_type = defaultdict(list)
                for g, r in jumps:
                    by_type[r["type"]].append(g)
                print("  error growth over one op, median by op type: " + ", ".join(
                    f"{t} x{np.median(v):.2f}" for t, v in sorted(by_type.items())))
                for g, r in sorted(jumps, key=lambda j: -j[0])[:6]:
                    print(f"  x{g:8.1f} -> {r['rel_err']:.2e}  {r['type']} {r['op']}")
                print(flush=True)
            if args.noise and k == 0:
                rows = fq_noise(core, out, held.arrays)
                report[name]["noise"] = rows
                by_pat = defaultdict(list)
                for r in rows:
                    by_pat[pattern_of(r)].append(r)
                print("\nquantized activations by pattern (noise = ||FQ(x)-x||^2/||x||^2, mean and max over the "
                      "pattern's tensors; peak/rms = max |x| / rms(x)):")
                for pat, rs in sorted(by_pat.items(), key=lambda kv: -max(r["noise"] for r in kv[1])):
                    ns = [r["noise"] for r in rs]
                    print(f"  {len(rs):3d}x  noise mean {np.mean(ns):.2e} max {max(ns):.2e}  peak/rms max "
                          f"{max(r['peak_to_rms'] for r in rs):7.1f}  {pat}")
                print("\nworst 12 tensors:")
                for r in sorted(rows, key=lambda r: -r["noise"])[:12]:
                    print(f"  noise {r['noise']:.2e} peak/rms {r['peak_to_rms']:7.1f}  {r['input']} -> {r['consumer']}")
                print(flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
