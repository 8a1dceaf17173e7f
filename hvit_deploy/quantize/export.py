"""``--precision int8`` (and ``w4``): export FP32, quantize, gate on held-out images, fall back layer by layer.

The FP32 artifact is exported and validated first (into a hidden work folder inside the output folder), then
quantized there; only an artifact that passes the gate is moved to its final name ``NAME-int8.*``, so a failed
gate leaves nothing in the output folder that looks like a good artifact. The manifest entry carries the
calibration set (size, sha256 over the file hashes), the quantizer settings, the gate's figures before and after
fallback and the layers kept in floating point.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import HvitError
from ..export.pipeline import SUFFIX
from ..formats.artifact import ExportResult, artifact_stem, sha256_of, size_of
from ..preprocess import preprocessing_for
from ..utils.io import ensure_writable_dir
from .calibration import split_sets
from .gate import gate_failures, gate_figures

PRECISIONS = ("int8", "w4")


class QuantizationError(HvitError):
    """A quantization request that cannot be carried out as asked."""


def _warn(msg: str) -> None:
    print(f"hvit-export: warning: {msg}", file=sys.stderr)


def check_request(fmt: str, precision: str, calibration) -> None:
    if precision == "w4" and fmt != "coreml":
        raise QuantizationError(f"--precision w4 (4-bit weights) is for coreml only, not {fmt}")
    if precision == "int8" and fmt not in ("onnx", "openvino", "coreml"):  # executorch, litert: fp32 for now
        raise QuantizationError(f"--precision int8 is not available for {fmt} yet; it exports fp32 only")
    if precision == "int8" and fmt in ("onnx", "openvino") and not calibration:
        raise QuantizationError(f"--precision int8 for {fmt} needs calibration images: --calibration DIR "
                                "(Core ML's int8 is weight-only and needs none)")


def prepare_data(session, calibration, eval_data=None, calibration_size=None, warn=_warn):
    """The calibration and held-out sets of ``session`` (cached on it), preprocessed for its model."""
    key = (str(calibration), str(eval_data), calibration_size)
    cache = getattr(session, "_quant_data", {})
    if key not in cache:
        q = session.recipe.quantization
        pre = preprocessing_for(session.spec, session.input_size)
        calib, held = split_sets(calibration, size=calibration_size or q.calibration_size, eval_data=eval_data,
                                 holdout=q.holdout_size, preprocess=pre, warn=warn)
        cache[key] = (calib, held)
        session._quant_data = cache
    return cache[key]


def _run_batched(fn, arrays: np.ndarray, batch: int) -> np.ndarray:
    n = len(arrays)
    padded = arrays if n % batch == 0 else np.concatenate([arrays, np.repeat(arrays[-1:], batch - n % batch, 0)])
    chunks = [np.ascontiguousarray(padded[i:i + batch]) for i in range(0, len(padded), batch)]
    outs = fn(chunks)
    return np.concatenate([o.reshape(batch, -1) for o in outs])[:n]


def eager_logits(model: torch.nn.Module, arrays: np.ndarray, batch: int) -> np.ndarray:
    with torch.no_grad():
        return _run_batched(lambda xs: [model(torch.from_numpy(x)).numpy() for x in xs], arrays, batch)


def export_quantized(session, fmt: str, out_dir, *, rewrite: bool = True, opset: int | None = None,
                     precision: str = "int8", calibration=None, eval_data=None, calibration_size: int | None = None,
                     fallback: bool = True, warn=_warn) -> ExportResult:
    check_request(fmt, precision, calibration)
    out = ensure_writable_dir(out_dir)
    q = session.recipe.quantization
    stem = artifact_stem(session.name, rewritten=rewrite, precision=precision, input_shape=session.input_shape,
                         default_size=session.spec.input_size)
    final = out / f"{stem}{SUFFIX[fmt]}"
    weight_only = fmt == "coreml"
    calib = held = None
    if not weight_only or calibration:
        if fmt == "coreml":
            warn("Core ML int8 here is weight-only; calibrating activations needs macOS, so --calibration is unused")
        else:
            calib, held = prepare_data(session, calibration, eval_data, calibration_size, warn)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=".hvit-int8-", dir=out))
    try:
        fp32 = session.export(fmt, work, rewrite=rewrite, opset=opset, precision="fp32")
        result = ExportResult(model=session.name, format=fmt, ok=False, input_shape=session.input_shape,
                              rewrites=fp32.rewrites)
        entry = dict(fp32.entry)
        entry.update(precision=precision, path=None, status="failed")
        for k in ("files", "sha256", "size_bytes", "bin_sha256"):
            entry.pop(k, None)
        entry["fp32_validation"] = entry.pop("validation", {})
        if not fp32.ok:
            result.error = f"FP32 export before quantization failed: {fp32.error}"
        else:
            fp32_size = fp32.entry["size_bytes"]
            if fmt == "coreml":
                info = _coreml(session, fp32.path, work / final.name, precision, q)
                gate_ok, err = info.pop("ok"), info.pop("error", None)
            else:
                info = _int8_with_gate(session, fmt, fp32.path, work / final.name, calib, held, q, fallback,
                                       rewrite)
                gate_ok, err = info.pop("ok"), info.pop("error", None)
            entry["quantization"] = info
            entry["validation"] = info.get("gate", {}).get("final", info.get("check", {}))
            if gate_ok:
                files = [work / final.name] + ([(work / final.name).with_suffix(".bin")] if fmt == "openvino" else [])
                for f in files:
                    dest = out / f.name
                    if dest.is_dir():
                        shutil.rmtree(dest)
                    os.replace(f, dest)
                result.ok, result.path = True, final
                entry.update(status="ok", path=final.name, files=[f.name for f in files], sha256=sha256_of(final),
                             size_bytes=sum(size_of(out / f.name) for f in files))
                entry["size_ratio_vs_fp32"] = round(entry["size_bytes"] / fp32_size, 4)
                if fmt == "openvino":
                    entry["bin_sha256"] = sha256_of(final.with_suffix(".bin"))
            else:
                result.error = err
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.seconds = round(time.perf_counter() - t0, 2)
    entry["seconds"] = result.seconds
    if not result.ok:
        entry["error"] = result.error
    else:
        entry.pop("error", None)
    result.entry = entry
    result.validation = entry.get("validation", {})
    return result


def _int8_with_gate(session, fmt, fp32_path: Path, target: Path, calib, held, q, fallback: bool, rewrite) -> dict:
    from ..export.onnx_exporter import run_onnx
    from ..export.openvino_exporter import run_openvino
    from . import fallback as fb

    batch = session.batch
    arrays = calib.arrays
    # eager FP32 on the held-out set, once per session and set: every format's gate compares with the same
    # logits, and on a slow eager model (ACmix) this pass alone is minutes
    refs = session.__dict__.setdefault("_int8_refs", {})
    if (held.sha256, batch) not in refs:
        refs[(held.sha256, batch)] = eager_logits(session.model, held.arrays, batch)
    ref = refs[(held.sha256, batch)]
    work = target.parent
    if fmt == "onnx":
        from .onnx_int8 import pre_process, quantizable_nodes, quantize_onnx, with_feeding_chain

        source, pre = pre_process(fp32_path, work, q)
        nodes = quantizable_nodes(source)
        map_nodes = fb.onnx_nodes_for

        def quantize(excluded):
            s = quantize_onnx(source, target, arrays, batch, q, with_feeding_chain(source, excluded))
            s["pre_process"] = pre
            return s
        run = run_onnx
    else:
        from .openvino_int8 import quantizable_nodes, quantize_openvino

        nodes = quantizable_nodes(fp32_path)
        map_nodes = fb.openvino_nodes_for

        def quantize(excluded):
            return quantize_openvino(fp32_path, target, arrays, batch, q, excluded)
        run = run_openvino

    def judge():
        out = _run_batched(lambda xs: run(target, xs), held.arrays, batch)
        fig = gate_figures(ref, out, held.labels, q.gate.tie_logit_margin)
        return fig, gate_failures(fig, q.gate)

    settings = quantize([])
    fig, bad = judge()
    tries = [{"layers_in_fp": [], "nodes_in_fp": [], "figures": fig, "failures": bad}]
    info: dict = {"calibration": calib.describe(), "held_out": held.describe(), "settings": settings,
                  "gate_thresholds": q.gate.model_dump(), "fallback": {"enabled": bool(fallback and q.fallback.enabled)}}
    if bad and fallback and q.fallback.enabled:
        model, names, _ = session.prepared(fmt, rewrite)
        n_sens = min(q.fallback.sensitivity_images, len(held.arrays))
        # the ranking depends on the module and the data only: formats with the same rewrites share it
        rkey = (tuple(names), calib.sha256, held.sha256, n_sens, q.fallback.candidates)
        rankings = session.__dict__.setdefault("_int8_rankings", {})
        t_rank = time.perf_counter()
        if rkey not in rankings:
            rankings[rkey] = fb.rank_layers(model, arrays, held.arrays[:max(n_sens, batch)], batch=batch,
                                            calib_images=8, candidates=q.fallback.candidates)
        ranking = rankings[rkey]
        info["fallback"]["ranking_s"] = round(time.perf_counter() - t_rank, 2)
        mapped = [(r, map_nodes(r["layer"], nodes)) for r in ranking]
        mapped = [(r, n) for r, n in mapped if n]
        info["fallback"]["ranking"] = [dict(r, nodes=n) for r, n in mapped[:2 * q.fallback.max_layers]]
        k = 1
        for _ in range(q.fallback.max_tries):
            chosen = mapped[:min(k, q.fallback.max_layers)]
            if not chosen:
                break
            excluded = [n for _, ns in chosen for n in ns]
            settings = quantize(excluded)
            fig, bad = judge()
            tries.append({"layers_in_fp": [r["layer"] for r, _ in chosen], "nodes_in_fp": excluded,
                          "figures": fig, "failures": bad})
            if not bad or len(chosen) >= min(q.fallback.max_layers, len(mapped)):
                break
            k *= 2
        info["settings"] = settings
    info["gate"] = {"before_fallback": tries[0]["figures"], "final": tries[-1]["figures"], "tries": tries,
                    "passed": not bad}
    info["layers_in_fp"] = tries[-1]["layers_in_fp"]
    info["ok"] = not bad
    if bad:
        extra = (f" after keeping {len(tries[-1]['layers_in_fp'])} layer(s) in FP" if len(tries) > 1 else
                 (" (fallback off)" if not info["fallback"]["enabled"] else ""))
        info["error"] = "INT8 accuracy gate failed" + extra + ": " + "; ".join(bad)
    return info


def _coreml(session, fp32_pkg: Path, target: Path, precision: str, q) -> dict:
    from .coreml_weights import quantize_coreml_weights

    return quantize_coreml_weights(fp32_pkg, target, precision, q, tuple(session.input_shape),
                                   tuple(session.output_shape))
