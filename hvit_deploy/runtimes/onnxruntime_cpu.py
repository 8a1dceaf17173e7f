"""``onnxruntime``: an ONNX artifact on ONNX Runtime's CPU execution provider.

Session options, everywhere the project runs ONNX (validation, ``hvit-bench``, the benchmark scripts):
``intra_op_num_threads`` = threads (0: ORT's default), ``inter_op_num_threads`` 1, sequential execution, all
graph optimisations. The timed call is ``run_with_iobinding`` with the input bound once and outputs in buffers
allocated once, so that it does no copies or allocations of its own.
"""
from __future__ import annotations

import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .base import Runtime, Unavailable, check_batch, os_threads, random_input, register_runtime, timed_load, top_ops, RuntimeSpec
from .int8_weights import onnx_weight_bits, saturation_note


# Checked with onnxruntime 1.31.1 (docs/bench.md, "BF16"): on x86 the CPU execution provider has no BF16 kernels
# for MatMul, Gemm, Add or ReduceMax (NOT_IMPLEMENTED; its one BF16 switch,
# mlas.enable_gemm_fastmath_arm64_bfloat16, is for ARM64 GEMMs), and an FP16 graph runs its MatMul, Conv, Add and
# Softmax as FP32 kernels between Cast nodes the session inserts (only LayerNormalization keeps an FP16 kernel)
NO_LOW_PRECISION = ("ONNX Runtime's CPU execution provider has no real BF16 or FP16 compute path on this CPU: no "
                    "BF16 kernels for MatMul/Gemm/Add (its one BF16 option, mlas.enable_gemm_fastmath_arm64_bfloat16, "
                    "is for ARM64), and an FP16 graph runs as FP32 kernels between inserted Casts")


def session_options(threads: int, profiling_prefix: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profiling_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profiling_prefix
    return so


def aggregate_ort_profile(events: list[dict], runs: int, top: int, skip_runs: int = 0) -> list[dict]:
    """Sum ONNX Runtime profiler kernel times by op type, ignoring the first ``skip_runs`` runs."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    t_from = starts[skip_runs] if len(starts) > skip_runs else 0
    totals: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.defaultdict(int)
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e.get("ts", 0) < t_from:
            continue
        op = (e.get("args") or {}).get("op_name", "?")
        totals[op] += float(e.get("dur", 0))
        counts[op] += 1
    return top_ops(totals, counts, runs, top, unit_ms=1e-3)


@register_runtime
class OrtRuntime(Runtime):
    name = "onnxruntime"
    order = 20
    format = "onnx"
    package = "onnxruntime"
    aliases = ("ort", "onnxruntime-cpu", "ort-cpu")
    description = "ONNX Runtime, CPU execution provider"
    thread_keys = ("intra_op_threads",)

    @classmethod
    def precision_unavailable(cls, precision: str | None) -> str | None:
        if precision in ("bf16", "fp16") and cls.device_kind == "cpu":
            return NO_LOW_PRECISION
        return super().precision_unavailable(precision)
    provider = "CPUExecutionProvider"
    provider_options: dict | None = None
    ort_device = "cpu"  # where the input and output buffers live

    def _providers(self) -> list:
        first = (self.provider, self.provider_options) if self.provider_options else self.provider
        return [first] + (["CPUExecutionProvider"] if self.provider != "CPUExecutionProvider" else [])

    def _session(self, profiling_prefix: str | None = None):
        import onnxruntime as ort

        return ort.InferenceSession(str(self.spec.artifact), session_options(self.threads, profiling_prefix),
                                    providers=self._providers())

    def __init__(self, spec: RuntimeSpec | dict):
        super().__init__(spec)
        import onnxruntime as ort

        self.ort = ort
        if self.provider not in ort.get_available_providers():
            raise Unavailable(f"{self.provider} is not in this onnxruntime build (providers: "
                              + ", ".join(ort.get_available_providers()) + ")")
        before = os_threads()
        self.sess, self.load_s = timed_load(self._session)
        after = os_threads()
        used = self.sess.get_providers()
        if used[0] != self.provider:
            raise Unavailable(f"{self.provider} did not start (session runs on {used[0]})")
        opts = self.sess.get_session_options()
        self.readback = {
            "intra_op_threads": opts.intra_op_num_threads,
            "inter_op_threads": opts.inter_op_num_threads,
            "execution_mode": str(opts.execution_mode).rsplit(".", 1)[-1],
            "graph_optimization_level": str(opts.graph_optimization_level).rsplit(".", 1)[-1],
            "providers": used,
            # ORT's intra-op pool adds threads - 1 OS threads (the caller is the last one): an independent check
            "os_threads_added_by_session": (after - before) if (after is not None and before is not None) else None,
        }
        self.timing = ("wall clock (perf_counter_ns) around InferenceSession.run_with_iobinding; input bound once "
                       "before timing (IO binding), outputs in pre-allocated buffers")
        if self.device_kind == "cpu":  # int8 sums that saturate on this CPU? (int8_weights)
            bits = onnx_weight_bits(self.spec.artifact)
            if bits is not None:
                self.readback["int8_weight_bits"] = bits
                note = saturation_note(bits, "ONNX Runtime", 'quantization.onnx_reduce_range: "on"')
                if note:
                    self.notes.append(note)

    @classmethod
    def thread_notes(cls, threads: int, readback: dict) -> list[str]:
        notes = super().thread_notes(threads, readback)
        added = readback.get("os_threads_added_by_session")
        if cls.ort_device == "cpu" and added is not None and added > threads:
            notes.append(f"{cls.name} session added {added} OS threads for {threads} intra-op threads")
        return notes

    def prepare(self, seed: int = 0) -> None:
        inp = self.sess.get_inputs()[0]
        check_batch(inp.shape, self.input_shape)
        want = self.input_shape or [1 if not isinstance(d, int) else d for d in inp.shape]
        self.input_shape = [d if isinstance(d, int) else s for d, s in zip(inp.shape, want)]
        self.x = random_input(self.input_shape, seed)
        self.io = self._bind()
        self.call = self._make_call(self.sess.run_with_iobinding, self.io)

    def _bind(self):
        """Input bound once (on the device for GPU providers), outputs into buffers allocated once where their shape
        is static, so that the timed call does no copies or allocations of its own."""
        ort, dev, io = self.ort, self.ort_device, self.sess.io_binding()
        name = self.sess.get_inputs()[0].name
        if dev == "cpu":
            io.bind_cpu_input(name, self.x)
        else:
            self._xd = ort.OrtValue.ortvalue_from_numpy(self.x, dev, 0)
            io.bind_ortvalue_input(name, self._xd)
        self._outs = []
        for o in self.sess.get_outputs():
            if all(isinstance(d, int) for d in o.shape):
                buf = ort.OrtValue.ortvalue_from_shape_and_type(o.shape, np.float32, dev, 0)
                self._outs.append(buf)
                io.bind_ortvalue_output(o.name, buf)
            else:
                io.bind_output(o.name, dev, 0)
        return io

    def _make_call(self, run, io):
        return lambda: run(io)

    def predict(self, inputs: list[np.ndarray], all_outputs: bool = False) -> list:
        name = self.sess.get_inputs()[0].name
        if all_outputs:
            return [tuple(self.sess.run(None, {name: x})) for x in inputs]
        return [self.sess.run(None, {name: x})[0] for x in inputs]

    def op_profile(self, runs: int, top: int) -> list[dict]:
        warm = 3
        with tempfile.TemporaryDirectory(prefix="hvit-ortprof-") as tmp:
            sess = self._session(profiling_prefix=os.path.join(tmp, "ort"))
            feed = {sess.get_inputs()[0].name: self.x}
            for _ in range(warm + runs):
                sess.run(None, feed)
            path = sess.end_profiling()
            events = json.loads(Path(path).read_text())
        return aggregate_ort_profile(events, runs, top, skip_runs=warm)
