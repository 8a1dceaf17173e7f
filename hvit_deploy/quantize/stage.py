"""The precision stage: a validated FP32 artifact in, a new artifact out.

:func:`convert` takes the result of an FP32 export (the artifact on disk, validated) and writes the artifact of
another precision beside it: INT8 QDQ ONNX (ONNX Runtime's quantizer), INT8 OpenVINO IR (NNCF), INT8 ExecuTorch
``.pte`` and LiteRT ``.tflite`` (PT2E, :mod:`.pt2e_int8`: these quantize the PyTorch graph, so they take the
module the FP32 artifact was exported from, ``GateInputs.module``, and copy the FP32 artifact's metadata), Core ML
with 8-bit (``w8``) or 4-bit palettized (``w4``) weights (coremltools). What the INT8 accuracy gate and the per-layer
fallback need is handed in (:class:`GateInputs`): the calibration and held-out images, eager FP32's logits on
the held-out images, the runtime that runs the artifact, and the module the FP32 artifact was exported from (to
rank the layers). The fallback re-quantizes the same FP32 artifact with the worst layers excluded; nothing here
exports again. The stage sits below :mod:`hvit_deploy.export`, which calls it after the FP32 export.

The new artifact is written into a hidden work folder inside ``out_dir`` and moved to its final name only when it
passed (the gate, or Core ML's program check), so a failed gate leaves nothing that looks like a good artifact.
The returned :class:`~hvit_deploy.formats.artifact.ExportResult` carries in ``entry`` the stage's own facts for
the manifest entry: ``artifact_precision``, ``compute_precision``, ``quantization`` (calibration set, quantizer
settings, the gate's figures before and after fallback, the layers kept in floating point) and
``size_ratio_vs_fp32``.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import HvitError
from ..formats.artifact import ExportResult, size_of
from ..recipes import QuantizationOptions
from ..utils.batching import run_in_batches
from .calibration import ImageSet, split_sets
from .compute import COMPUTE_PRECISIONS, compute_gate, failure_text
from .gate import gate_failures, gate_figures

if TYPE_CHECKING:
    import torch

PRECISIONS = ("int8", "w4", "bf16")   # the --precision words this stage makes from an FP32 artifact
# the formats --precision int8 is made for; all but Core ML (weight-only) calibrate activations
INT8_FORMATS = ("onnx", "openvino", "executorch", "litert", "coreml")
PT2E_FORMATS = ("executorch", "litert")   # quantized from the PyTorch module (PT2E), not from the FP32 file
# the converted artifacts keep float activations between their integer (or compressed-weight) layers, and the
# runtimes that validate them compute those in float32 (OpenVINO: INFERENCE_PRECISION_HINT=f32)
COMPUTE_PRECISION = "fp32"


class QuantizationError(HvitError):
    """A quantization request that cannot be carried out as asked."""


def say(msg: str) -> None:
    """A progress line on stderr (hvit-bench relays these from its export worker: bench/process.py NOTE_PREFIX):
    each fallback try re-quantizes (and for PT2E formats re-converts) the model, minutes each on a large one."""
    print(f"hvit-export: {msg}", file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    say(f"warning: {msg}")


def check_request(fmt: str, precision: str, calibration) -> None:
    if precision in COMPUTE_PRECISIONS:
        from ..formats import format_names, get_format

        if precision not in get_format(fmt).compute_precisions:
            able = [n for n in format_names() if precision in get_format(n).compute_precisions]
            raise QuantizationError(f"--precision {precision} is a compute precision (the FP32 artifact, computed in "
                                    f"{precision} by its runtime), which {' and '.join(able) or 'no format'} can "
                                    f"carry, not {fmt}")
        return
    if precision == "w4" and fmt != "coreml":
        raise QuantizationError(f"--precision w4 (4-bit weights) is for coreml only, not {fmt}")
    if precision == "int8" and fmt not in INT8_FORMATS:
        raise QuantizationError(f"--precision int8 is not available for {fmt}; it exports fp32 only")
    if precision == "int8" and needs_data(fmt) and not calibration:
        raise QuantizationError(f"--precision int8 for {fmt} needs calibration images: --calibration DIR "
                                "(Core ML's int8 is weight-only and needs none)")


def artifact_precision(fmt: str, precision: str) -> str:
    """What the converted file holds: Core ML's ``int8`` is 8-bit weights with float activations (``w8``)."""
    if precision in COMPUTE_PRECISIONS:
        return "fp32"
    return "w8" if fmt == "coreml" and precision == "int8" else precision


def needs_data(fmt: str) -> bool:
    """Whether ``fmt``'s conversion calibrates activations (and so is gated on held-out images)."""
    return fmt != "coreml"


def needs_held_out(fmt: str, precision: str) -> bool:
    """Whether the ``precision`` artifact of ``fmt`` is gated on held-out images (INT8 with data, and bf16)."""
    return precision in COMPUTE_PRECISIONS or needs_data(fmt)


def load_sets(calibration, *, preprocess, options: QuantizationOptions, eval_data=None,
              calibration_size: int | None = None, warn: Callable[[str], None] = warn) -> tuple[ImageSet, ImageSet]:
    """The calibration and held-out sets, preprocessed by ``preprocess`` (the model's evaluation transform)."""
    return split_sets(calibration, size=calibration_size or options.calibration_size, eval_data=eval_data,
                      holdout=options.holdout_size, preprocess=preprocess, warn=warn)


def eager_logits(model: torch.nn.Module, arrays: np.ndarray, batch: int) -> np.ndarray:
    """``model``'s outputs on ``arrays``, ``batch`` at a time, one flattened row per input row."""
    import torch

    with torch.no_grad():
        return run_in_batches(lambda xs: [model(torch.from_numpy(x)).numpy() for x in xs], arrays, batch)


@dataclass
class GateInputs:
    """What the INT8 gate and the per-layer fallback need, handed in by the caller."""

    calibration: ImageSet | None          # calibration images (``arrays``: preprocessed for the model); None
                                          # for a compute precision (bf16), which calibrates nothing
    held_out: ImageSet                    # the gate's images
    reference_logits: np.ndarray          # eager FP32 on ``held_out.arrays`` (:func:`eager_logits`)
    batch: int                            # the artifact's batch
    runtime: str                          # the runtime that runs the artifact (:mod:`hvit_deploy.runtimes`)
    module: Callable[[], torch.nn.Module] | None = None   # the module the FP32 artifact was exported from
    rankings: dict = field(default_factory=dict)          # fallback rankings, shared by one model's formats


def convert(fp32: ExportResult, precision: str, *, out_dir: str | os.PathLike, target_name: str,
            options: QuantizationOptions, gate: GateInputs | None = None, fallback: bool = True,
            output_shape: tuple[int, ...] | None = None) -> ExportResult:
    """The ``precision`` artifact (``int8`` or ``w4``) made from the FP32 export ``fp32``, as
    ``out_dir/target_name`` when it passes. ``gate``: required for ONNX and OpenVINO INT8. ``fallback``: keep the
    most harmful layers in floating point when the gate fails (and the recipe allows it). ``output_shape``: the
    model's output shape, for Core ML's program check. A failure comes back as ``ok=False`` with ``error``."""
    fmt = fp32.format
    result = ExportResult(model=fp32.model, format=fmt, ok=False, input_shape=fp32.input_shape,
                          rewrites=list(fp32.rewrites))
    facts: dict = {"artifact_precision": artifact_precision(fmt, precision), "compute_precision": COMPUTE_PRECISION}
    result.entry = facts
    if not fp32.ok or fp32.path is None:
        result.error = f"FP32 export before quantization failed: {fp32.error}"
        return result
    if precision in COMPUTE_PRECISIONS and gate is None:
        raise QuantizationError(f"--precision {precision} is gated on held-out images; none were given")
    if needs_data(fmt) and gate is None and precision not in COMPUTE_PRECISIONS:
        raise QuantizationError(f"--precision {precision} for {fmt} needs calibration images: --calibration DIR")
    t0 = time.perf_counter()
    out = Path(out_dir)
    work = Path(tempfile.mkdtemp(prefix=".hvit-int8-", dir=out))
    try:
        target = work / target_name
        if precision in COMPUTE_PRECISIONS:
            info = _compute_hinted(fmt, Path(fp32.path), target, gate, options, precision)
            facts["compute_precision"] = info["check"]["compute_precision"]
            facts["notes"] = info["check"]["notes"]
        elif needs_data(fmt):
            info = _int8_with_gate(fmt, Path(fp32.path), target, gate, options, fallback, list(fp32.rewrites),
                                   label=f"{fp32.model} -> {fmt} int8")
        else:
            from .coreml_weights import quantize_coreml_weights

            info = quantize_coreml_weights(Path(fp32.path), target, precision, options, tuple(fp32.input_shape),
                                           tuple(output_shape) if output_shape is not None else None)
        ok, err = info.pop("ok"), info.pop("error", None)
        if precision in COMPUTE_PRECISIONS:
            facts["precision_gate"] = info["check"]
            result.validation = info["check"]["figures"]
        else:
            facts["quantization"] = info
            if "delegation" in info.get("settings", {}):  # the INT8 .pte's own share, not its FP32 source's
                facts["delegation"] = info["settings"]["delegation"]
            result.validation = info.get("gate", {}).get("final", info.get("check", {}))
        if ok:
            if "delegation" in facts:
                from ..formats.executorch import note

                note(facts["delegation"], f"executorch {precision}")
            files = _move_into(target, out, _sidecars(fp32))
            result.ok, result.path = True, files[0]
            facts["size_ratio_vs_fp32"] = round(sum(size_of(f) for f in files) / _size(fp32), 4)
        else:
            result.error = err
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.seconds = round(time.perf_counter() - t0, 2)
    return result


def _compute_hinted(fmt: str, fp32_path: Path, target: Path, gate: GateInputs, q: QuantizationOptions,
                    precision: str) -> dict:
    """The FP32 artifact copied to ``target`` with the ``precision`` request written into it (the format's
    ``compute_hint``), then run by its runtime in that precision and judged by the INT8 gate on the held-out
    images (:func:`.compute.compute_gate`)."""
    from ..formats import get_format

    get_format(fmt).compute_hint(fp32_path, target, precision)
    check = compute_gate(gate.runtime, {"artifact": str(target), "compute_precision": precision}, gate.held_out,
                         gate.reference_logits, q.gate, gate.batch)
    if check["compute_precision"] != precision:
        from ..utils.cpu import BF16_FLAGS, has_bf16

        if precision == "bf16" and not has_bf16():  # said once, in the words a reader of the manifest needs
            check["notes"] = [n for n in check["notes"] if "no BF16 arithmetic" not in n] + [
                f"this CPU has no BF16 arithmetic (none of {', '.join(BF16_FLAGS)}), so the session that validated "
                f"the artifact computed in {check['compute_precision']}; on a CPU with BF16 the same file computes "
                "in bf16"]
    return {"check": check, "ok": check["passed"], **({} if check["passed"] else {"error": failure_text(check)})}


def _sidecars(fp32: ExportResult) -> list[str]:
    """The suffixes of the files written beside the main one (OpenVINO's ``.bin``, ExecuTorch's ``.pte.json``)."""
    from ..formats.base import get_format

    return list(get_format(fp32.format).sidecars)


def _size(fp32: ExportResult) -> int:
    size = (fp32.entry or {}).get("size_bytes")
    return size or size_of(Path(fp32.path)) + sum(size_of(Path(fp32.path).with_suffix(s)) for s in _sidecars(fp32))


def _move_into(target: Path, out: Path, sidecars: list[str]) -> list[Path]:
    files = [target] + [target.with_suffix(s) for s in sidecars]
    for f in files:
        dest = out / f.name
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(f, dest)
    return [out / f.name for f in files]


def _quantizer(fmt: str, fp32_path: Path, target: Path, gate: GateInputs, q: QuantizationOptions):
    """(quantize(excluded layers' nodes) -> settings, the artifact's quantizable nodes, layer -> nodes)."""
    from . import fallback as fb

    arrays, batch = gate.calibration.arrays, gate.batch
    if fmt == "onnx":
        from .onnx_int8 import pre_process, quantizable_nodes, quantize_onnx, with_feeding_chain

        source, pre = pre_process(fp32_path, target.parent, q)

        def quantize(excluded):
            s = quantize_onnx(source, target, arrays, batch, q, with_feeding_chain(source, excluded))
            s["pre_process"] = pre
            return s
        return quantize, quantizable_nodes(source), fb.onnx_nodes_for
    if fmt == "openvino":
        from .openvino_int8 import quantizable_nodes, quantize_openvino

        def quantize(excluded):
            return quantize_openvino(fp32_path, target, arrays, batch, q, excluded)
        return quantize, quantizable_nodes(fp32_path), fb.openvino_nodes_for
    if fmt in PT2E_FORMATS:
        return _pt2e_quantizer(fmt, fp32_path, target, gate, q)
    raise QuantizationError(f"--precision int8 is not made for {fmt} here")


def _pt2e_quantizer(fmt: str, fp32_path: Path, target: Path, gate: GateInputs, q: QuantizationOptions):
    """PT2E quantizes the module the FP32 artifact was exported from (exported once more, same node names). The
    nodes of the modules the recipe's ``pt2e_modules_in_fp`` names for ``fmt`` are left out of the annotation from
    the first try on (``settings.recipe_nodes_in_fp``); ``nodes_in_fp`` stays the fallback's."""
    import torch

    from . import pt2e_int8

    if gate.module is None:
        raise QuantizationError(f"--precision int8 for {fmt} needs the module the FP32 artifact was exported from")
    module = gate.module()
    example = torch.from_numpy(np.ascontiguousarray(gate.calibration.arrays[:gate.batch]))
    nodes = pt2e_int8.graph_nodes(pt2e_int8.export_graph(module, example))
    make = pt2e_int8.quantize_executorch if fmt == "executorch" else pt2e_int8.quantize_litert
    patterns = q.pt2e_modules_in_fp.get(fmt, [])
    by_recipe = pt2e_int8.nodes_matching(patterns, nodes)

    def quantize(excluded):
        s = make(module, example, fp32_path, target, gate.calibration.arrays, gate.batch, by_recipe + list(excluded))
        s.update(nodes_in_fp=list(excluded), recipe_nodes_in_fp={"patterns": list(patterns), "nodes": by_recipe})
        return s
    return quantize, nodes, pt2e_int8.nodes_for


def _int8_with_gate(fmt: str, fp32_path: Path, target: Path, gate: GateInputs, q: QuantizationOptions,
                    fallback: bool, rewrites: list[str], label: str = "int8") -> dict:
    from ..runtimes import run_artifact

    quantize, nodes, map_nodes = _quantizer(fmt, fp32_path, target, gate, q)
    held = gate.held_out

    def judge():
        out = run_in_batches(lambda xs: run_artifact(gate.runtime, target, xs), held.arrays, gate.batch)
        fig = gate_figures(gate.reference_logits, out, held.labels, q.gate.tie_logit_margin)
        return fig, gate_failures(fig, q.gate)

    settings = quantize([])
    fig, bad = judge()
    tries = [{"layers_in_fp": [], "nodes_in_fp": [], "figures": fig, "failures": bad}]
    info: dict = {"calibration": gate.calibration.describe(), "held_out": held.describe(), "settings": settings,
                  "gate_thresholds": q.gate.model_dump(), "fallback": {"enabled": bool(fallback and q.fallback.enabled)}}
    if bad and info["fallback"]["enabled"] and gate.module is not None:
        say(f"{label}: gate failed ({bad[0]}); ranking the layers by the harm INT8 does them ...")
        mapped = [(r, map_nodes(r["layer"], nodes)) for r in _ranking(gate, q, rewrites, info["fallback"])]
        mapped = [(r, n) for r, n in mapped if n]
        info["fallback"]["ranking"] = [dict(r, nodes=n) for r, n in mapped[:2 * q.fallback.max_layers]]
        k = 1
        for _ in range(q.fallback.max_tries):
            chosen = mapped[:min(k, q.fallback.max_layers)]
            if not chosen:
                break
            excluded = [n for _, ns in chosen for n in ns]
            say(f"{label}: fallback try {len(tries)} of at most {q.fallback.max_tries}: {len(chosen)} layer(s) "
                f"kept in floating point ({', '.join(r['layer'] for r, _ in chosen[:3])}"
                f"{', ...' if len(chosen) > 3 else ''}) ...")
            settings = quantize(excluded)
            fig, bad = judge()
            tries.append({"layers_in_fp": [r["layer"] for r, _ in chosen], "nodes_in_fp": excluded,
                          "figures": fig, "failures": bad})
            if not bad or len(chosen) >= min(q.fallback.max_layers, len(mapped)):
                break
            k *= 2
        if bad and q.fallback.group_tries:
            groups = [(g, sorted({n for m in g["members"] for n in map_nodes(m, nodes)}))
                      for g in _group_ranking(gate, q, rewrites, info["fallback"])]
            groups = [(g, n) for g, n in groups if n]
            info["fallback"]["groups"] = [dict(g, nodes=n) for g, n in groups[:2 * q.fallback.group_tries]]
            # a group is worth a re-quantization only where the simulation sees harm the single layers did not
            # carry (more than the worst single's) and that the gate could notice (a tenth of the cosine it allows
            # to lose); where every simulated harm is below that, the runtime's INT8 differs from the simulation
            worst_single = max((r["harm"] for r, _ in mapped if r.get("harm") is not None), default=0.0)
            floor = max(0.1 * (1.0 - q.gate.min_mean_cosine), 1e-4)
            useful = [(g, n) for g, n in groups if g["harm"] >= floor and g["harm"] > worst_single]
            if groups and not useful:
                info["fallback"]["groups_skipped"] = (
                    f"no role group's simulated harm (at most {groups[0][0]['harm']:.2g}) is both above {floor:.2g} "
                    f"and above the worst single layer's ({worst_single:.2g}): the simulation does not explain the "
                    "runtime's INT8 error here")
                say(f"{label}: no role group stands out in the simulation; no group tries")
            groups = useful
            for k in range(1, min(q.fallback.group_tries, len(groups)) + 1):
                chosen = groups[:k]
                excluded = sorted({n for _, ns in chosen for n in ns})
                say(f"{label}: single layers were not enough; fallback try {len(tries)}: role group(s) "
                    f"{', '.join(g['layer'] for g, _ in chosen)} ({sum(len(g['members']) for g, _ in chosen)} "
                    "layers) kept in floating point ...")
                settings = quantize(excluded)
                fig, bad = judge()
                tries.append({"layers_in_fp": [m for g, _ in chosen for m in g["members"]], "nodes_in_fp": excluded,
                              "groups_in_fp": [g["layer"] for g, _ in chosen], "figures": fig, "failures": bad})
                if not bad:
                    break
        info["settings"] = settings
    info["gate"] = {"before_fallback": tries[0]["figures"], "final": tries[-1]["figures"], "tries": tries,
                    "passed": not bad}
    if info["settings"].get("weight_bits") == 8:  # quantized for VNNI: say what that means for other targets
        from ..utils.cpu import has_vnni, is_x86

        here = " (as on this CPU, whose gate figures include it)" if is_x86() and not has_vnni() else ""
        warn(f"{label}: 8-bit weights: their int8 sums are exact on x86 CPUs with VNNI or AMX and on Arm, but an x86 "
             f"CPU without VNNI adds them in int16 and can saturate{here}; for such a target, re-export on it or ask "
             "the recipe for 7-bit weights (quantization.onnx_reduce_range \"on\" / openvino_overflow_fix enable)")
    info["layers_in_fp"] = tries[-1]["layers_in_fp"]
    info["ok"] = not bad
    if bad:
        extra = (f" after keeping {len(tries[-1]['layers_in_fp'])} layer(s) in FP" if len(tries) > 1 else
                 (" (fallback off)" if not info["fallback"]["enabled"] else ""))
        info["error"] = "INT8 accuracy gate failed" + extra + ": " + "; ".join(bad)
    return info


def _group_ranking(gate: GateInputs, q: QuantizationOptions, rewrites: list[str], record: dict) -> list[dict]:
    """The role groups by the harm their quantization does as a whole (:func:`.fallback.rank_groups`), cached
    beside the layers' ranking."""
    from . import fallback as fb

    t0 = time.perf_counter()
    held = gate.held_out
    n_sens = min(q.fallback.sensitivity_images, len(held.arrays))
    key = ("groups", tuple(rewrites), gate.calibration.sha256, held.sha256, n_sens)
    if key not in gate.rankings:
        gate.rankings[key] = fb.rank_groups(gate.module(), gate.calibration.arrays,
                                            held.arrays[:max(n_sens, gate.batch)], batch=gate.batch, calib_images=8)
    record["group_ranking_s"] = round(time.perf_counter() - t0, 2)
    return gate.rankings[key]


def _ranking(gate: GateInputs, q: QuantizationOptions, rewrites: list[str], record: dict) -> list[dict]:
    """The layers by the harm their quantization does (:func:`.fallback.rank_layers`), once per module and data:
    formats exported with the same rewrites share it through ``gate.rankings``."""
    from . import fallback as fb

    held, batch = gate.held_out, gate.batch
    n_sens = min(q.fallback.sensitivity_images, len(held.arrays))
    key = (tuple(rewrites), gate.calibration.sha256, held.sha256, n_sens, q.fallback.candidates)
    t0 = time.perf_counter()
    if key not in gate.rankings:
        gate.rankings[key] = fb.rank_layers(gate.module(), gate.calibration.arrays,
                                            held.arrays[:max(n_sens, batch)], batch=batch, calib_images=8,
                                            candidates=q.fallback.candidates)
    record["ranking_s"] = round(time.perf_counter() - t0, 2)
    return gate.rankings[key]
