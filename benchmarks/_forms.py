"""What the side-by-side form benchmarks share: export, one CPU runner per runtime, interleaved timing, the table.

Each runner is a session of :mod:`hvit_deploy.runtimes` — the same module, session options and timed call
(``run_with_iobinding`` for ONNX Runtime, ``InferRequest.infer`` with the input set once for OpenVINO) that
``hvit-bench`` and export validation use — checked against the eager output, and returned as a ``Runner``: a
no-argument call plus what the table prints about it.

Why not ``hvit-bench``'s worker processes: the forms compared here are alternative module forms built in this
process (rewrite options a recipe chooses between), not registered models, so they are timed here, in one
process, all sessions loaded together, rounds rotated so drift falls on every form alike, with the garbage
collector off during timed calls as in ``hvit-bench``'s worker. :data:`PROTOCOL_NOTE` says so in each output.
"""
from __future__ import annotations

import atexit
import contextlib
import gc
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

PROTOCOL_NOTE = ("timing: sessions from hvit_deploy.runtimes (as hvit-bench sets them up), all in this process "
                 "(the forms are module variants, not registered models, so hvit-bench's one-process-per-entry "
                 "workers cannot load them); rounds rotated; GC off while timing")


@dataclass
class Runner:
    call: Callable[[], object]
    diff: float                      # max |runtime output - eager reference|
    ops: set[str] = field(default_factory=set)
    nodes: int = 0                   # compute nodes in the graph (parameters, results and constants not counted)


@contextlib.contextmanager
def quiet():
    """Tracer warnings and converter chatter off: the table is the output."""
    from hvit_deploy.formats.quiet import captured

    with warnings.catch_warnings(), captured():
        warnings.simplefilter("ignore")
        yield


def export_onnx(model, x, path: Path, simplify: bool = True) -> Path:
    """TorchScript exporter, opset 18, then onnxsim (as ``hvit-export`` does)."""
    import onnx
    import torch

    with quiet(), torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=18, do_constant_folding=True,
                          input_names=["input"], output_names=["logits"])
        if simplify:
            import onnxsim

            simplified, ok = onnxsim.simplify(onnx.load(str(path)))
            if ok:
                onnx.save(simplified, str(path))
    return path


def _runtime_runner(name: str, artifact: Path, x, threads: int, ref: np.ndarray):
    from hvit_deploy.runtimes import open_runtime

    xn = np.asarray(x)
    rt = open_runtime(name, {"artifact": str(artifact), "threads": threads, "input_shape": list(xn.shape)})
    diff = float(np.abs(rt.predict([xn])[0] - ref).max())
    rt.prepare()
    return rt, diff


def ort_runner(path: Path, x, threads: int, ref: np.ndarray) -> Runner:
    import onnx

    rt, diff = _runtime_runner("onnxruntime", path, x, threads, ref)
    nodes = onnx.load(str(path)).graph.node
    return Runner(rt.call, diff, {n.op_type for n in nodes}, len(nodes))


_IR_DIR: list[Path] = []


def ov_runner(model, x, threads: int, ref: np.ndarray) -> Runner:
    """Convert ``model`` to an fp32 IR (saved, as ``hvit-export`` saves it) and open it on the openvino runtime."""
    import openvino as ov
    import torch

    if not _IR_DIR:
        _IR_DIR.append(Path(tempfile.mkdtemp(prefix="hvit-forms-ir-")))
        atexit.register(shutil.rmtree, _IR_DIR[0], True)
    with quiet(), torch.no_grad():
        ov_model = ov.convert_model(model, example_input=x, input=[tuple(x.shape)])
    xml = _IR_DIR[0] / f"form{time.monotonic_ns()}.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    rt, diff = _runtime_runner("openvino", xml, x, threads, ref)
    ops = [op.get_type_name() for op in ov_model.get_ordered_ops()]
    nodes = sum(t not in ("Parameter", "Result", "Constant") for t in ops)
    return Runner(rt.call, diff, set(ops), nodes)


@dataclass
class Timings:
    wall: dict[object, list[float]]          # every call's wall-clock latency, ms
    cpu: dict[object, list[float]]           # the process's CPU time during each call, ms
    round_medians: dict[object, list[float]]  # per round, the median wall latency of that form's calls


def time_interleaved(runners: dict, rounds: int, iters: int, warmup: int) -> Timings:
    """Each round runs every runner ``iters`` times, in an order rotated round by round, so that slow drift on a
    shared machine falls on all forms alike; ratios are then taken round by round."""
    keys = list(runners)
    for k in keys:
        for _ in range(warmup):
            runners[k].call()
    t = Timings({k: [] for k in keys}, {k: [] for k in keys}, {k: [] for k in keys})
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _rounds(runners, keys, rounds, iters, t)
    finally:
        if was_enabled:
            gc.enable()
    return t


def _rounds(runners: dict, keys: list, rounds: int, iters: int, t: "Timings") -> None:
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            call, wall = runners[k].call, []
            for _ in range(iters):
                c0, t0 = time.process_time(), time.perf_counter()
                call()
                t1, c1 = time.perf_counter(), time.process_time()
                wall.append((t1 - t0) * 1e3)
                t.cpu[k].append((c1 - c0) * 1e3)
            t.wall[k] += wall
            t.round_medians[k].append(float(np.median(wall)))


def report(title: str, runners: dict, t: Timings, base: str, flag: str | None = None) -> None:
    """One row per form: median and p10-p90 of all calls, the ratio to ``base`` taken round by round (median,
    interquartile range and extremes over rounds), max|diff|, and whether the graph holds op ``flag``."""
    from tabulate import tabulate

    rows = []
    for k, ts in t.wall.items():
        p10, p90 = np.percentile(ts, [10, 90])
        row = [k, f"{np.median(ts):.3f}", f"{p10:.2f}-{p90:.2f}"]
        if base in t.round_medians:
            ratios = np.array(t.round_medians[k]) / np.array(t.round_medians[base])
            q25, q75 = np.percentile(ratios, [25, 75])
            row += [f"{np.median(ratios):.3f}", f"{q25:.3f}-{q75:.3f}", f"{ratios.min():.2f}-{ratios.max():.2f}"]
        else:
            row += ["-", "-", "-"]
        row.append(f"{runners[k].diff:.1e}")
        if flag:
            row.append("yes" if flag in runners[k].ops else "no")
        rows.append(row)
    headers = ["form", "median ms", "p10-p90 ms", f"ratio to {base}", "rounds p25-p75", "min-max", "max|diff|"]
    print(f"\n{title}")
    print(tabulate(rows, headers=headers + ([flag] if flag else []), disable_numparse=True))
    print(f"fastest: {min(t.wall, key=lambda k: float(np.median(t.wall[k])))}")
    print(PROTOCOL_NOTE)
