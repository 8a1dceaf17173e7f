"""PyTorch → OpenVINO IR (``.xml`` + ``.bin``) through OpenVINO's PyTorch frontend.

``openvino.save_model`` compresses weights to FP16 unless told otherwise; we keep FP32 unless the recipe or the
user asks for fp16. Validation runs the saved IR on the ``openvino`` runtime (CPU plugin, compiled exactly as
``hvit-bench`` compiles it, with ``INFERENCE_PRECISION_HINT=f32``) so that the check is of the IR itself, not of
a bf16 fast path some CPUs default to.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ExportError
from ..recipes import OpenVinoOptions
from .onnx import INPUT_NAME, OUTPUT_NAME, _first_line
from .base import Format, register_format
from .quiet import captured


def run_openvino(xml: str | Path, inputs: list[np.ndarray], threads: int | None = None,
                 all_outputs: bool = False) -> list:
    """Run an IR on OpenVINO's CPU plugin, compiled as ``hvit-bench`` compiles it (f32 inference): the first
    output per input, or (``all_outputs``) the tuple of every output per input."""
    from ..runtimes import run_artifact

    return run_artifact("openvino", xml, inputs, threads=threads, all_outputs=all_outputs)


def export_openvino(
    model: torch.nn.Module,
    example: torch.Tensor,
    xml_path: Path,
    opts: OpenVinoOptions,
    validate: Callable | None,
    *,
    metadata: dict[str, str] | None = None,
    output_name: str | list[str] = OUTPUT_NAME,
    dynamic_batch: bool = False,
) -> dict:
    """Convert, save (``metadata`` in ``rt_info``, see :mod:`.metadata`), validate the saved IR, then move it
    into place. ``dynamic_batch``: the input is ``[?, C, H, W]`` (the CPU plugin takes any batch)."""
    import openvino as ov

    from .metadata import apply_openvino

    tmp_xml = xml_path.with_name(f".{xml_path.stem}.{os.getpid()}.xml")
    tmp_bin = tmp_xml.with_suffix(".bin")
    t0 = time.perf_counter()
    try:
        with captured(), torch.no_grad():
            shape = (-1,) + tuple(example.shape[1:]) if dynamic_batch else tuple(example.shape)
            ov_model = ov.convert_model(model, example_input=example, input=[shape])
        if dynamic_batch and not ov_model.inputs[0].get_partial_shape()[0].is_dynamic:
            raise ExportError("OpenVINO conversion fixed the batch size")
        ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
        names = [output_name] if isinstance(output_name, str) else list(output_name)
        for out, name in zip(ov_model.outputs, names):
            out.get_tensor().set_names({name})
        apply_openvino(ov_model, metadata)
        ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=(opts.precision == "fp16"))
    except Exception as e:
        for p in (tmp_xml, tmp_bin):
            p.unlink(missing_ok=True)
        raise ExportError(f"OpenVINO conversion failed: {type(e).__name__}: {_first_line(e)}") from e
    info = {"exporter": "openvino.convert_model", "export_s": round(time.perf_counter() - t0, 2),
            "precision": opts.precision, "op_types": _op_histogram(ov_model)}
    try:
        if validate is not None:
            multi = not isinstance(output_name, str)
            figures, bad = validate(lambda xs: run_openvino(tmp_xml, xs, all_outputs=multi))
            info["validation"] = figures
            if bad:
                raise ExportError("OpenVINO IR does not match PyTorch: " + "; ".join(bad))
        os.replace(tmp_bin, xml_path.with_suffix(".bin"))
        os.replace(tmp_xml, xml_path)
    finally:
        for p in (tmp_xml, tmp_bin):
            p.unlink(missing_ok=True)
    return info


def write_compute_hint(src_xml: Path, dst_xml: Path, precision: str) -> None:
    """``src_xml`` saved as ``dst_xml`` (weights unchanged, FP32) with ``rt_info`` ``runtime_options /
    INFERENCE_PRECISION_HINT`` = ``precision``'s OpenVINO type (bf16). The project's ``openvino`` runtime (and so
    hvit-bench and hvit-eval) compiles such an IR with that hint; OpenVINO's CPU plugin itself does not apply this
    rt_info key (2026.4 applies only its KV-cache and dynamic-quantization runtime_options), so a user passes it
    to ``compile_model`` (on a CPU with BF16 the plugin's own default is bf16 already)."""
    import openvino as ov

    from ..runtimes.openvino_cpu import HINT_RT_INFO, HINTS

    core = ov.Core()
    model = core.read_model(str(src_xml))
    model.set_rt_info(HINTS[precision], list(HINT_RT_INFO))
    with captured():
        ov.save_model(model, str(dst_xml), compress_to_fp16=False)


def _op_histogram(ov_model) -> dict[str, int]:
    hist: dict[str, int] = {}
    for op in ov_model.get_ordered_ops():
        t = op.get_type_name()
        if t in ("Parameter", "Result", "Constant"):
            continue
        hist[t] = hist.get(t, 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


def _export(job) -> dict:
    return export_openvino(job.model, job.example, job.path,
                           job.recipe.openvino.model_copy(update={"precision": job.precision}), job.validate,
                           **job.options)


register_format(Format(
    name="openvino", suffix=".xml", export=_export, run=run_openvino, precisions=("fp32", "fp16"),
    default_precision=lambda recipe: recipe.openvino.precision, tools=("torch", "openvino"), runtime="openvino",
    sidecars=(".bin",), order=1, artifact_precisions=("fp32", "fp16", "int8"), aliases=("ir", "ov"),
    compute_precisions=("bf16",), compute_hint=write_compute_hint,
    description="OpenVINO IR (.xml + .bin) via openvino.convert_model"))
