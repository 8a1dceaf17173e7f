"""PyTorch → ExecuTorch ``.pte``: ``torch.export``, then ``to_edge_transform_and_lower`` with the XNNPACK
partitioner, then ``to_executorch``.

What XNNPACK does not take stays on ExecuTorch's portable CPU kernels, which are many times slower (a ViT ran
37x slower than on ONNX Runtime that way, pytorch/executorch#6961), so the share of the graph delegated is
recorded (``delegation`` in the manifest) and heavy ops left undelegated (conv, linear, matmul, softmax, layer
norm, ...) are named in a note. A ``.pte`` has no metadata field: the table of :mod:`hvit_deploy.formats.metadata`
is written beside it as ``NAME.pte.json``. Validation runs the candidate on the ``executorch`` runtime
(:mod:`hvit_deploy.runtimes.executorch`), set up as ``hvit-bench`` sets it up.

The ``mobile`` extra (``executorch``) is imported only inside these functions.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..errors import ExportError
from .base import Format, register_format
from . import _mobile

SIDE_SUFFIX = ".pte.json"


def side_path(pte: str | Path) -> Path:
    """Where a ``.pte``'s metadata table lives: ``NAME.pte.json`` beside it."""
    return Path(str(pte) + ".json")


def lower(model, example):
    """``torch.export`` → XNNPACK-lowered edge program (raises the converter's exception)."""
    import torch

    with torch.no_grad():
        ep = torch.export.export(model.eval(), (example,), strict=False)
    return lower_program(ep)


def lower_program(ep):
    """An exported program lowered with the XNNPACK partitioner (the INT8 path hands in its PT2E program)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])


def delegation(edge) -> dict:
    """The share of the lowered graph's ops that XNNPACK runs, and the ops left on the portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    # getitem nodes only pick an output out of a tuple (layer norm's, split's): not ops that run
    ops = {op: b for op, b in sorted(info.delegation_by_operator.items()) if op != "getitem"}
    done = sum(b.delegated for b in ops.values())
    left = {op: b.non_delegated for op, b in ops.items() if b.non_delegated}
    total = done + sum(left.values())
    return {"backend": "XnnpackBackend", "subgraphs": info.num_delegated_subgraphs,
            "delegated_ops": done, "undelegated_ops": total - done,
            "share": round(done / total, 4) if total else 0.0,
            "undelegated": left, "heavy_undelegated": sorted(op for op in left if _mobile.is_heavy(op))}


def _convert(job, tmp: Path) -> dict:
    from .quiet import captured

    t0 = time.perf_counter()
    with captured():
        try:
            edge = lower(job.model, job.example)
            facts = delegation(edge)
            program = edge.to_executorch()
        except Exception as e:  # noqa: BLE001 - the converter's reason, one line
            raise ExportError(f"ExecuTorch conversion failed: {_mobile.reason(e)}") from e
    tmp.write_bytes(program.buffer)
    return {"exporter": "torch.export + XNNPACK (executorch)", "export_s": round(time.perf_counter() - t0, 2),
            "delegation": facts}


def note(facts: dict, what: str = "executorch") -> None:
    share = facts["share"]
    line = (f"note: {what}: {facts['delegated_ops']} of {facts['delegated_ops'] + facts['undelegated_ops']} "
            f"ops delegated to XNNPACK ({share:.0%}) in {facts['subgraphs']} subgraph(s)")
    if facts["heavy_undelegated"]:
        line += ("; heavy ops left outside XNNPACK (on ExecuTorch's own CPU kernels): "
                 + ", ".join(facts["heavy_undelegated"]))
    print(line, file=sys.stderr)


def export_executorch(job) -> dict:
    """Convert, write the metadata side file, validate the candidate, then move both into place."""
    _mobile.require("executorch")
    if job.options.get("dynamic_batch"):
        raise ExportError("the executorch export is static-shape here: leave out --dynamic-batch")
    tmp = _mobile.temp_beside(job.path, "et")
    tmp_side = side_path(tmp)
    with _mobile.cleanup(tmp, tmp_side):
        info = _convert(job, tmp)
        tmp_side.write_text(json.dumps(job.options.get("metadata") or {}, indent=1, ensure_ascii=False))
        note(info["delegation"])
        if job.validate is not None:
            from ..runtimes import run_artifact

            multi = not isinstance(job.options.get("output_name", "logits"), str)
            figures, bad = job.validate(lambda xs: run_artifact("executorch", tmp, xs, all_outputs=multi))
            info["validation"] = figures
            if bad:
                raise ExportError("ExecuTorch program does not match PyTorch: " + "; ".join(bad))
        os.replace(tmp_side, side_path(job.path))
        os.replace(tmp, job.path)
    return info


def read_pte_metadata(path: str | Path) -> dict[str, str]:
    side = side_path(path)
    return json.loads(side.read_text()) if side.is_file() else {}


register_format(Format(
    name="executorch", suffix=".pte", export=export_executorch, precisions=("fp32",),
    default_precision=lambda recipe: "fp32", tools=("torch", "executorch"), runtime="executorch",
    rewrites_like="onnx", missing=lambda: _mobile.missing("executorch"),
    sidecars=(SIDE_SUFFIX,), aliases=("pte", "et"), order=3,
    description="ExecuTorch .pte (torch.export, XNNPACK partitioner; needs the mobile extra)"))
