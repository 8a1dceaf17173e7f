"""PyTorch → ONNX, then onnxsim, then ``onnx.checker``; the first exporter whose artifact validates wins."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ExportError
from ..recipes import OnnxOptions
from .base import Format, register_format
from .quiet import captured

INPUT_NAME, OUTPUT_NAME = "input", "logits"
BATCH_DIM = "batch"      # the symbolic name of a dynamic batch axis
MAX_DYNAMIC_BATCH = 64   # the dynamo exporter's and Core ML's upper bound of a dynamic batch


def run_onnx(path: str | Path, inputs: list[np.ndarray], threads: int | None = None,
             all_outputs: bool = False) -> list:
    """Run an ONNX file on ONNX Runtime's CPU provider, set up as ``hvit-bench`` sets it up: the first output
    per input, or (``all_outputs``) the tuple of every output per input."""
    from ..runtimes import run_artifact

    return run_artifact("onnxruntime", path, inputs, threads=threads, all_outputs=all_outputs)


def _export_once(model: torch.nn.Module, example: torch.Tensor, path: Path, exporter: str, opset: int,
                 output_name: str | list[str] = OUTPUT_NAME, dynamic_batch: bool = False) -> None:
    names = [output_name] if isinstance(output_name, str) else list(output_name)
    kwargs = dict(input_names=[INPUT_NAME], output_names=names, opset_version=opset)
    if dynamic_batch and exporter == "dynamo":
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim(BATCH_DIM, min=1, max=MAX_DYNAMIC_BATCH)},)
    elif dynamic_batch:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: BATCH_DIM}, **{n: {0: BATCH_DIM} for n in names}}
    with captured() as log, torch.no_grad():
        try:
            if exporter == "dynamo":
                torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, **kwargs)
            else:
                torch.onnx.export(model, (example,), str(path), dynamo=False, do_constant_folding=True, **kwargs)
        except Exception as e:
            tail = " | ".join(line for line in log.getvalue().splitlines()[-3:] if line.strip())
            raise ExportError(f"{exporter} exporter: {type(e).__name__}: {_first_line(e)}"
                              + (f" [{tail}]" if tail and len(tail) < 300 else "")) from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = next((t for t in text if t.strip()), type(e).__name__)
    return line[:300]


def _batch_is_dynamic(model) -> bool:
    """Axis 0 of the graph's input and of its output are symbolic (no fixed size)."""
    dims = [v.type.tensor_type.shape.dim[0] for v in (model.graph.input[0], model.graph.output[0])
            if v.type.tensor_type.shape.dim]
    return len(dims) == 2 and all(not d.HasField("dim_value") for d in dims)


def _simplify_and_check(path: Path, simplify: bool, metadata: dict[str, str] | None = None,
                        dynamic_batch: bool = False) -> dict:
    import onnx

    from .metadata import apply_onnx

    info: dict = {}
    model = onnx.load(str(path))
    info["nodes_exported"] = len(model.graph.node)
    if simplify:
        try:
            import onnxsim

            with captured():
                simplified, ok = onnxsim.simplify(model)
            if ok and dynamic_batch and not _batch_is_dynamic(simplified):
                info["onnxsim"] = "fixed the batch size; kept the unsimplified graph"
            elif ok:
                model = simplified
                info["onnxsim"] = "simplified"
            else:
                info["onnxsim"] = "check failed; kept the unsimplified graph"
        except Exception as e:  # onnxsim is best effort: the exported graph is still valid
            info["onnxsim"] = f"failed ({type(e).__name__}); kept the unsimplified graph"
    if dynamic_batch and not _batch_is_dynamic(model):
        raise ExportError("the exported graph has a fixed batch size, not a dynamic one")
    apply_onnx(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    info["nodes"] = len(model.graph.node)
    info["op_types"] = _op_histogram(model)
    info["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    info["double_tensors"] = _double_tensors(model)
    return info


def _op_histogram(model) -> dict[str, int]:
    hist: dict[str, int] = {}
    for n in model.graph.node:
        hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


def _double_tensors(model) -> int:
    import onnx

    count = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.DOUBLE)
    count += sum(1 for v in model.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE)
    return count


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    opts: OnnxOptions,
    validate: Callable[[Callable[[list[np.ndarray]], list[np.ndarray]]], tuple[dict, list[str]]] | None,
    opset: int | None = None,
    *,
    metadata: dict[str, str] | None = None,
    output_name: str | list[str] = OUTPUT_NAME,
    dynamic_batch: bool = False,
) -> dict:
    """Export to ``path``; ``validate(run_fn)`` returns (figures, failures) for a candidate. Returns the info
    of the winning attempt, with every attempt listed under ``attempts``. ``metadata`` goes into the model's
    ``metadata_props`` (see :mod:`.metadata`); ``output_name`` names the output (``logits`` or ``features``).
    ``dynamic_batch``: axis 0 of input and output is the symbolic ``batch`` (TorchScript ``dynamic_axes``,
    dynamo ``dynamic_shapes``); pass an example with a batch of 2 or more (the dynamo exporter specialises 1)."""
    opset = opset or opts.opset
    attempts = []
    for exporter in opts.exporters:
        if exporter == "dynamo" and opset < 18:
            attempts.append({"exporter": exporter, "error": f"the dynamo exporter needs opset >= 18, not {opset}"})
            continue
        tmp = path.with_name(f".{path.stem}.{exporter}.{os.getpid()}.onnx")
        t0 = time.perf_counter()
        try:
            _export_once(model, example, tmp, exporter, opset, output_name, dynamic_batch)
            info = _simplify_and_check(tmp, opts.simplify, metadata, dynamic_batch)
            info.update(exporter=exporter, export_s=round(time.perf_counter() - t0, 2))
            if validate is not None:
                multi = not isinstance(output_name, str)
                figures, bad = validate(lambda xs: run_onnx(tmp, xs, all_outputs=multi))
                info["validation"] = figures
                if bad:
                    attempts.append({"exporter": exporter, "error": "validation: " + "; ".join(bad)})
                    continue
            os.replace(tmp, path)
            info["attempts"] = attempts + [{"exporter": exporter, "error": None}]
            return info
        except ExportError as e:
            attempts.append({"exporter": exporter, "error": str(e)})
        except Exception as e:
            attempts.append({"exporter": exporter, "error": f"{type(e).__name__}: {_first_line(e)}"})
        finally:
            if tmp.exists():
                tmp.unlink()
    raise ExportError("ONNX export failed: " + "; ".join(f"{a['exporter']}: {a['error']}" for a in attempts))


def _export(job) -> dict:
    return export_onnx(job.model, job.example, job.path, job.recipe.onnx, job.validate, opset=job.opset,
                       **job.options)


register_format(Format(
    name="onnx", suffix=".onnx", export=_export, run=run_onnx, precisions=("fp32",), default_precision=lambda recipe: "fp32",
    tools=("torch", "onnx", "onnxsim", "onnxscript"), runtime="onnxruntime", order=0,
    artifact_precisions=("fp32", "int8"),
    description="ONNX (TorchScript or dynamo exporter, onnxsim, onnx.checker)"))
