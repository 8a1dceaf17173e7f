"""PyTorch → LiteRT ``.tflite`` (the former TensorFlow Lite) through ``litert_torch.convert`` (no TensorFlow).

The converter lays tensors out NHWC inside; the artifact's signature keeps the PyTorch input, ``[B, 3, H, W]``
NCHW, as its metadata says. The metadata table of :mod:`hvit_deploy.formats.metadata` goes into the flatbuffer's
own ``metadata`` list (entry :data:`METADATA_NAME`, a JSON object), written with ai-edge-litert's
``flatbuffer_utils`` before validation, so the file validated is the file shipped. Validation runs the candidate
on the ``litert`` runtime (:mod:`hvit_deploy.runtimes.litert`: the interpreter with its XNNPACK delegate).

The ``mobile`` extra (``litert-torch``, ``ai-edge-litert``) is imported only inside these functions.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .base import Format, register_format
from . import _mobile

METADATA_NAME = "hvit_deploy"


def write_metadata(path: Path, meta: dict[str, str]) -> None:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    flatbuffer_utils.write_model(model, str(path))


def read_tflite_metadata(path: str | Path) -> dict[str, str]:
    """The table :func:`export_litert` wrote into a ``.tflite`` ({} when it holds none)."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == METADATA_NAME:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode("utf-8"))
    return {}


def _convert(job, tmp: Path) -> dict:
    import torch

    from .quiet import captured

    t0 = time.perf_counter()
    with captured(native=True):   # the MLIR converter logs to descriptor 2 itself
        try:
            import litert_torch

            with torch.no_grad():
                edge = litert_torch.convert(job.model.eval(), (job.example,))
            edge.export(str(tmp))
        except Exception as e:  # noqa: BLE001 - the converter's reason, one line
            raise ExportError(f"LiteRT conversion failed: {_mobile.reason(e)}") from e
    return {"exporter": "litert_torch.convert", "export_s": round(time.perf_counter() - t0, 2),
            "op_types": op_histogram(tmp)}


def op_histogram(path: Path) -> dict[str, int]:
    """The builtin ops of the converted graph, by count."""
    from ai_edge_litert.interpreter import Interpreter

    hist: dict[str, int] = {}
    for op in Interpreter(model_path=str(path))._get_ops_details():
        hist[op["op_name"]] = hist.get(op["op_name"], 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


def export_litert(job) -> dict:
    """Convert, write the metadata into the flatbuffer, validate the candidate, then move it into place."""
    _mobile.require("litert")
    if job.options.get("dynamic_batch"):
        raise ExportError("the litert export is static-shape here: leave out --dynamic-batch")
    tmp = _mobile.temp_beside(job.path, "tfl")
    with _mobile.cleanup(tmp):
        info = _convert(job, tmp)
        write_metadata(tmp, job.options.get("metadata") or {})
        if job.validate is not None:
            from ..runtimes import run_artifact

            multi = not isinstance(job.options.get("output_name", "logits"), str)
            figures, bad = job.validate(lambda xs: run_artifact("litert", tmp, xs, all_outputs=multi))
            info["validation"] = figures
            if bad:
                raise ExportError("LiteRT model does not match PyTorch: " + "; ".join(bad))
        os.replace(tmp, job.path)
    return info


register_format(Format(
    name="litert", suffix=".tflite", export=export_litert, precisions=("fp32",),
    default_precision=lambda recipe: "fp32", tools=("torch", "litert-torch", "ai-edge-litert"), runtime="litert",
    rewrites_like="onnx", missing=lambda: _mobile.missing("litert"),
    aliases=("tfl",), order=4,
    description="LiteRT .tflite (litert_torch.convert; needs the mobile extra)"))
