"""The worker process: one runtime, one model, driven by the coordinator (:mod:`.runner`).

Started as ``python -m hvit_deploy.bench.worker --fd N`` with the thread variables (OMP_NUM_THREADS, ...) already
in its environment, so they are in place before any runtime is imported. Commands arrive as JSON lines on stdin;
replies go as JSON lines to file descriptor N (stdout and stderr are left to the runtimes' own chatter, which the
coordinator keeps in a log and quotes when something fails).

Commands: ``probe`` (which backends can run here), ``export`` (build or reuse a cached artifact), ``setup`` (load,
first inference, warm-up until settled), ``run`` (timed runs), ``setup`` with ``spec["artifact_b"]`` and
``run_pair`` (two artifacts in this one process, timed in alternating ABBA blocks: the paired A/B design of
``hvit-bench --against``), ``op_profile``, ``quit``. A worker also exits when stdin closes, so it never
outlives its coordinator.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
import traceback

from . import messages as m

PROGRESS_INTERVAL_NS = 250_000_000
PROTOCOL = 1  # bumped when commands or replies change; `hvit-bench --against` needs both checkouts to agree
# (run_pair is answered by this checkout's worker only: the base checkout's worker is never asked for it)


class Channel:
    def __init__(self, fd: int):
        self.out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(self, msg: m.Reply) -> None:
        self.out.write(json.dumps(msg.to_wire(), default=str) + "\n")
        self.out.flush()


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) < 600 else text[:600] + " ..."


def timed_runs(call, n: int, progress=None, interval_ns: int = PROGRESS_INTERVAL_NS, collect: bool = True,
               clock=time.perf_counter_ns) -> list[int]:
    """``n`` timed calls; returns nanoseconds per call. Only ``call()`` sits between the two clock reads.
    ``collect=False``: the caller already collected garbage and keeps the collector off (the paired blocks).
    ``clock``: integer nanoseconds (tests pass a fake one)."""
    pc = clock
    out = [0] * n
    if collect:
        gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        next_report = pc() + interval_ns
        for i in range(n):
            t0 = pc()
            call()
            t1 = pc()
            out[i] = t1 - t0
            if progress is not None and t1 > next_report:
                progress(i + 1)
                next_report = pc() + interval_ns
    finally:
        if was_enabled:
            gc.enable()
    return out


def warm_up(call, cfg: m.WarmupConfig | dict, progress=None, clock=time.perf_counter_ns) -> m.WarmupReport:
    """At least ``min_runs`` runs, then windows of ``window`` runs until latency stops improving (see
    :func:`.stats.settled`); capped by ``max_runs`` and ``max_seconds``. ``clock`` as in :func:`timed_runs`."""
    import statistics

    from .stats import settled

    cfg = cfg.model_dump() if isinstance(cfg, m.WarmupConfig) else cfg
    t_start = clock()
    deadline = t_start + float(cfg["max_seconds"]) * 1e9
    runs = 0
    first = timed_runs(call, min(int(cfg["min_runs"]), int(cfg["max_runs"])), clock=clock)
    runs += len(first)
    medians: list[float] = []
    window = int(cfg["window"])
    is_settled = False
    reason = ""
    while True:
        if progress:
            progress(runs)
        if settled(medians, float(cfg["tolerance"])):
            is_settled = True
            break
        if runs + window > int(cfg["max_runs"]):
            reason = f"max_runs ({cfg['max_runs']}) reached"
            break
        if clock() > deadline:
            reason = f"max_seconds ({cfg['max_seconds']}) reached"
            break
        w = timed_runs(call, window, clock=clock)
        runs += window
        medians.append(statistics.median(w) / 1e6)
    return m.WarmupReport(runs=runs, settled=is_settled, seconds=round((clock() - t_start) / 1e9, 3),
                          window_medians_ms=[round(x, 4) for x in medians[-6:]],
                          not_settled_because=None if is_settled else reason)


def handle(ch: Channel, cmd: m.Command, session):
    """Answer one command; returns the session (set up by ``setup``)."""
    if isinstance(cmd, m.HelloCmd):
        from .. import __version__
        from ..resources import package_dir

        ch.send(m.Hello(protocol=PROTOCOL, package=str(package_dir() / "__init__.py"), version=__version__))
    elif isinstance(cmd, m.ProbeCmd):
        from ..runtimes import get_runtime

        ch.send(m.Probed(available={b: get_runtime(b).availability() for b in cmd.backends}))
    elif isinstance(cmd, m.ExportCmd):
        from .artifacts import export_many

        results = export_many(cmd.model, [tuple(r) for r in cmd.requests], input_size=cmd.input_size,
                              checkpoint=cmd.checkpoint, batch_size=cmd.batch_size, precision=cmd.precision)
        ch.send(m.Exported(results=results))
    elif isinstance(cmd, m.SetupCmd):
        return setup(ch, cmd)
    elif isinstance(cmd, m.RunCmd):
        if session is None:
            raise RuntimeError("run before setup")
        if cmd.warm:
            timed_runs(session.call, cmd.warm)
        ns = timed_runs(session.call, cmd.n, lambda i: ch.send(m.Progress(done=i)))
        ch.send(m.Samples(ns=ns))
    elif isinstance(cmd, m.RunPairCmd):
        if session is None or getattr(session, "partner", None) is None:
            raise RuntimeError("run_pair before a paired setup")
        a, b = paired_blocks(session.call, session.partner.call, cmd.blocks, cmd.block, cmd.warm,
                             start_with_b=cmd.start_with_b)
        ch.send(m.SamplesPair(a=a, b=b))
    elif isinstance(cmd, m.GateCmd):
        ch.send(m.Gated(check=precision_gate(cmd)))
    elif isinstance(cmd, m.OpProfileCmd):
        if session is None:
            raise RuntimeError("op_profile before setup")
        ch.send(m.OpProfiled(ops=session.op_profile(cmd.runs, cmd.top)))
    return session


def precision_gate(cmd: m.GateCmd) -> dict:
    """The gate of a compute-precision entry: eager FP32 (the model as written, as INT8's gate takes it) against
    the runtime session ``cmd.spec`` computing in its ``compute_precision``, on the held-out images."""
    from ..factory import resolve_input_size
    from ..preprocess import preprocessing_for
    from ..quantize import compute_gate, eager_logits, held_out_set
    from ..recipes import recipe_or_default
    from ..registry import get_spec
    from ..runtimes.torch_cpu import build_model

    spec = cmd.spec
    model_spec = get_spec(spec.model)
    q = recipe_or_default(model_spec.family).quantization   # its gate thresholds and held-out split size
    size = resolve_input_size(model_spec, spec.input_size)
    held = held_out_set(eval_data=cmd.eval_data, calibration=cmd.calibration, holdout=q.holdout_size,
                        preprocess=preprocessing_for(model_spec, size))
    reference = eager_logits(build_model(spec.model_copy(update={"rewrite": False})).eval(), held.arrays, 1)
    run_spec = spec.model_dump(exclude_none=True)
    return compute_gate(spec.backend, run_spec, held, reference, q.gate, batch=spec.batch_size)


def _failure(e: Exception) -> m.Reply:
    from ..errors import HvitError
    from ..runtimes import Unavailable

    if isinstance(e, Unavailable):
        return m.Skipped(reason=one_line(e))
    if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError: a batch too big for the device
        return m.Failed(error="out of memory: " + ". ".join(one_line(e).split(". ")[:2])[:200] + " (a smaller batch may fit)")
    return m.Failed(error=f"{type(e).__name__}: {one_line(e)}" if not isinstance(e, HvitError) else one_line(e),
                    traceback=traceback.format_exc(limit=8)[-3000:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hvit_deploy.bench.worker")
    ap.add_argument("--fd", type=int, required=True, help="file descriptor for replies")
    args = ap.parse_args(argv)
    ch = Channel(args.fd)
    session = None
    try:
        from .plugins import load_from_env

        load_from_env()
    except Exception as e:  # noqa: BLE001
        ch.send(m.Failed(error=one_line(e)))
        return 1
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                cmd = m.parse_command(json.loads(line))
                if isinstance(cmd, m.QuitCmd):
                    break
                session = handle(ch, cmd, session)
            except Exception as e:  # noqa: BLE001 - every failure goes back to the coordinator as one line
                ch.send(_failure(e))
    finally:
        if session is not None:
            session.close()
            if getattr(session, "partner", None) is not None:
                session.partner.close()
    return 0


def paired_blocks(call_a, call_b, blocks: int, block: int, warm: int = 0,
                  start_with_b: bool = False) -> tuple[list[int], list[int]]:
    """``blocks`` pairs of blocks of ``block`` timed runs, A and B alternating in ABBA order (AB, BA, AB, ...;
    BA first with ``start_with_b``), so that a drift within a pair hits both alike; ``warm`` untimed runs of
    each before the first block. Returns the two lists of nanoseconds, block i of each at ``[i*block:(i+1)*block]``."""
    for _ in range(warm):
        call_a()
        call_b()
    a: list[int] = []
    b: list[int] = []
    gc.collect()  # once for all the blocks, not between every two of them
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(blocks):
            first_b = (i % 2 == 1) != start_with_b
            for which in ("b", "a") if first_b else ("a", "b"):
                (b if which == "b" else a).extend(
                    timed_runs(call_b if which == "b" else call_a, block, collect=False))
    finally:
        if was_enabled:
            gc.enable()
    return a, b


def _load(ch: Channel, spec, tag: str = ""):
    from ..runtimes import open_runtime

    if getattr(spec, "artifact", None) is None:
        # a runtime that builds the module itself reads the model registry: load the families (deferred at this
        # worker's start, see process.worker_env) before the clock starts, so load_ms is the model's load alone
        from ..registry import MODELS

        MODELS.load()
    t0 = time.perf_counter()
    session = open_runtime(spec.backend, spec)
    load_s = session.load_s or (time.perf_counter() - t0)
    session.prepare()
    t1 = time.perf_counter_ns()
    session.call()
    first_ms = (time.perf_counter_ns() - t1) / 1e6
    if not tag:
        ch.send(m.Loaded(load_ms=round(load_s * 1e3, 3), first_inference_ms=round(first_ms, 3)))
    return session, load_s, first_ms


def setup(ch: Channel, cmd: m.SetupCmd):
    session, load_s, first_ms = _load(ch, cmd.spec)
    session.partner = None
    partner_load = None
    warming = lambda n: ch.send(m.Warming(runs=n))  # noqa: E731
    if cmd.artifact_b:  # the paired design: the other checkout's artifact, same runtime, same process
        spec_b = cmd.spec.model_copy(update={"artifact": cmd.artifact_b})
        partner, load_b, first_b = _load(ch, spec_b, tag="b")
        session.partner = partner
        calls = (session.call, partner.call)
        state = [0]

        def both():  # warm-up alternates the two, so neither is cold when the blocks start
            calls[state[0] % 2]()
            state[0] += 1

        wu = warm_up(both, cmd.warmup, progress=warming)
        partner_load = m.PartnerLoad(load_ms=round(load_b * 1e3, 3), first_inference_ms=round(first_b, 3),
                                     readback=partner.readback, input_shape=partner.input_shape,
                                     notes=partner.notes, compute_precision=partner.compute_precision)
    else:
        wu = warm_up(session.call, cmd.warmup, progress=warming)
    ch.send(m.Ready(load_ms=round(load_s * 1e3, 3), first_inference_ms=round(first_ms, 3), warmup=wu,
                    readback=session.readback, device=session.device, timing=session.timing,
                    input_shape=session.input_shape, notes=session.notes, rewrites=getattr(session, "rewrites", None),
                    pid=os.getpid(), compute_precision=session.compute_precision, partner=partner_load))
    return session


def leave(code: int) -> None:
    """End the process without the interpreter's teardown. With torch and a runtime loaded, freeing every module
    at exit takes seconds (2.5-5 s measured on a loaded 2-core machine, 0.3 s this way), and the coordinator waits
    for it on every worker it closes. What a normal exit does that matters is kept: the atexit handlers run
    (coverage writes its data there), then stdout and stderr are flushed."""
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:  # pragma: no cover - runs after coverage's own atexit handler has saved its data
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":
    leave(main())
