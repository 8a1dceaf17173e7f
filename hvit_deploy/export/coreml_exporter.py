"""PyTorch → Core ML ML program (``.mlpackage``).

The graph is captured with ``torch.export`` or ``torch.jit.trace`` (in the recipe's order; the first that
converts wins). Core ML cannot run on Linux, so there the saved package's program is checked instead: input and
output names and shapes, the op types (nothing outside Core ML's op set), the largest tensor rank (Core ML takes
at most 5) and the precision of the program's tensors. On macOS the package is also run and compared.
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ExportError
from ..recipes import CoremlOptions
from .onnx_exporter import INPUT_NAME, OUTPUT_NAME, _first_line
from .formats import Format, register_format
from .quiet import captured, import_coremltools

CAN_PREDICT = platform.system() == "Darwin"


def _capture(model: torch.nn.Module, example: torch.Tensor, how: str):
    with torch.no_grad():
        if how == "export":
            return torch.export.export(model, (example,)).run_decompositions({})
        return torch.jit.trace(model, example, check_trace=False)


def inspect_package(path: str | Path) -> dict:
    """Facts of a saved ML program, read from its spec (works on any OS)."""
    ct = import_coremltools()
    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise ExportError(f"{Path(path).name} is a {spec.WhichOneof('Type')}, not an ML program")
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    ops: Counter = Counter()
    dtypes: Counter = Counter()
    max_rank = 0

    def walk(blk):
        nonlocal max_rank
        for op in blk.operations:
            ops[op.type] += 1
            for out in op.outputs:
                tt = out.type.tensorType
                max_rank = max(max_rank, tt.rank)
                if op.type != "const":
                    dtypes[ct.proto.MIL_pb2.DataType.Name(tt.dataType)] += 1
            for nested in op.blocks:
                walk(nested)

    walk(block)

    def io(desc):
        arr = desc.type.multiArrayType
        return {"name": desc.name, "shape": list(arr.shape),
                "dtype": ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType)}

    return {
        "spec_version": spec.specificationVersion,
        "opset": fn.opset,
        "inputs": [io(d) for d in spec.description.input],
        "outputs": [io(d) for d in spec.description.output],
        "op_types": dict(sorted(((k, v) for k, v in ops.items() if k != "const"), key=lambda kv: (-kv[1], kv[0]))),
        "ops": sum(v for k, v in ops.items() if k != "const"),
        "max_rank": max_rank,
        "tensor_dtypes": dict(dtypes),
    }


def check_program(facts: dict, example_shape: tuple[int, ...], output_shape: tuple[int, ...], precision: str) -> list[str]:
    bad = []
    ins, outs = facts["inputs"], facts["outputs"]
    if [i["name"] for i in ins] != [INPUT_NAME] or tuple(ins[0]["shape"]) != tuple(example_shape):
        bad.append(f"inputs {[(i['name'], i['shape']) for i in ins]} != [{INPUT_NAME} {list(example_shape)}]")
    if [o["name"] for o in outs] != [OUTPUT_NAME] or tuple(outs[0]["shape"]) != tuple(output_shape):
        bad.append(f"outputs {[(o['name'], o['shape']) for o in outs]} != [{OUTPUT_NAME} {list(output_shape)}]")
    if facts["max_rank"] > 5:
        bad.append(f"a tensor of rank {facts['max_rank']} (Core ML takes at most 5)")
    fp16 = facts["tensor_dtypes"].get("FLOAT16", 0)
    if precision in ("int8", "w4"):  # compressed weights: expanded by constexpr ops, activations stay fp32
        weight_ops = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense")
        if not any(facts["op_types"].get(k) for k in weight_ops):
            bad.append(f"no compressed-weight ops ({', '.join(weight_ops)}) in a {precision} program")
        if fp16:
            bad.append(f"{fp16} FLOAT16 tensors in a {precision} (fp32 compute) program")
    elif precision == "fp32" and fp16:
        bad.append(f"{fp16} FLOAT16 tensors in an fp32 program")
    if precision == "fp16" and not fp16:
        bad.append("no FLOAT16 tensors in an fp16 program")
    return bad


def run_coreml(path: str | Path, inputs: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - macOS only
    """Run a package on the ``coreml`` runtime, CPU only (validation checks the program, not the ANE)."""
    from ..runtimes import run_artifact

    return run_artifact("coreml", path, inputs, compute_units="CPU_ONLY")


def export_coreml(
    model: torch.nn.Module,
    example: torch.Tensor,
    pkg_path: Path,
    opts: CoremlOptions,
    validate: Callable | None,
    output_shape: tuple[int, ...],
    precision: str | None = None,
) -> dict:
    ct = import_coremltools()
    precision = precision or opts.precision
    target = getattr(ct.target, opts.minimum_deployment_target)
    compute_precision = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    tmp = pkg_path.with_name(f".{pkg_path.stem}.{os.getpid()}.mlpackage")
    attempts = []
    t0 = time.perf_counter()
    mlmodel = None
    for how in opts.capture:
        try:
            with captured():
                source = _capture(model, example, how)
                mlmodel = ct.convert(
                    source,
                    inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape))],
                    outputs=[ct.TensorType(name=OUTPUT_NAME)],
                    convert_to="mlprogram",
                    compute_precision=compute_precision,
                    minimum_deployment_target=target,
                )
            attempts.append({"capture": how, "error": None})
            break
        except Exception as e:
            attempts.append({"capture": how, "error": f"{type(e).__name__}: {_first_line(e)}"})
    if mlmodel is None:
        raise ExportError("Core ML conversion failed: " + "; ".join(f"{a['capture']}: {a['error']}" for a in attempts))
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        mlmodel.save(str(tmp))
        facts = inspect_package(tmp)
        info = {"exporter": f"coremltools ({attempts[-1]['capture']})", "export_s": round(time.perf_counter() - t0, 2),
                "precision": precision, "minimum_deployment_target": opts.minimum_deployment_target,
                "attempts": attempts, "program": facts, "op_types": facts["op_types"]}
        bad = check_program(facts, tuple(example.shape), output_shape, precision)
        if bad:
            raise ExportError("Core ML program check failed: " + "; ".join(bad))
        if CAN_PREDICT and validate is not None:  # pragma: no cover - macOS only
            figures, bad = validate(lambda xs: run_coreml(tmp, xs))
            info["validation"] = figures
            if bad:
                raise ExportError("Core ML output does not match PyTorch: " + "; ".join(bad))
        else:
            info["validation"] = {"ran": False, "reason": "Core ML runs only on macOS; the program was checked instead"}
        if pkg_path.exists():
            shutil.rmtree(pkg_path)
        os.replace(tmp, pkg_path)
        return info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export(job) -> dict:
    return export_coreml(job.model, job.example, job.path, job.recipe.coreml, job.validate, job.output_shape,
                         precision=job.precision)


register_format(Format(
    name="coreml", suffix=".mlpackage", export=_export, precisions=("fp32", "fp16"),
    default_precision=lambda recipe: recipe.coreml.precision, tools=("torch", "coremltools"), runtime="coreml",
    aliases=("mlpackage", "coreml-mlprogram"), description="Core ML ML program (.mlpackage) via coremltools"))
