"""``openvino``: an OpenVINO IR on OpenVINO's CPU plugin.

Compile settings, everywhere the project runs an IR (validation, ``hvit-bench``, the benchmark scripts):
what ``benchmark_app -hint none -nstreams 1 -nthreads N`` sets (one stream, ``INFERENCE_NUM_THREADS`` = threads;
0 leaves the plugin's default), plus ``INFERENCE_PRECISION_HINT=f32`` so an fp32 IR runs in fp32 (CPUs with
bf16 or AMX would otherwise default to bf16, and validation would check that fast path, not the IR). An INT8
IR keeps its quantised operations under this hint; only the floating-point parts stay in f32.
"""
from __future__ import annotations

import collections

import numpy as np

from .base import Runtime, RuntimeSpec, Unavailable, check_batch, os_threads, random_input, register_runtime, timed_load, top_ops

READBACK_KEYS = ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT",
                 "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "SCHEDULING_CORE_TYPE", "EXECUTION_DEVICES")


# OpenVINO's element types as the project's compute-precision words
PRECISION_WORDS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def plain(v):
    """An OpenVINO property value as JSON: numbers and flags as they are, types as 'f32', enums by name."""
    if isinstance(v, (int, float, bool, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, "get_type_name"):
        return v.get_type_name()
    return str(v).rsplit(".", 1)[-1]


@register_runtime
class OvRuntime(Runtime):
    name = "openvino"
    order = 30
    format = "openvino"
    package = "openvino"
    aliases = ("ov", "openvino-cpu", "ov-cpu")
    description = "OpenVINO, CPU plugin"
    thread_keys = ("INFERENCE_NUM_THREADS",)
    ov_device = "CPU"

    def config(self, perf_count: bool = False) -> dict:
        cfg = {"NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = str(self.threads)
        if perf_count:
            cfg["PERF_COUNT"] = "YES"
        return cfg

    def _check_device(self, core) -> None:
        if self.ov_device not in core.available_devices:
            raise Unavailable(f"OpenVINO has no {self.ov_device} device here (devices: "
                              + ", ".join(core.available_devices) + ")")

    def __init__(self, spec: RuntimeSpec | dict):
        super().__init__(spec)
        import openvino as ov

        self.ov = ov
        self.core = ov.Core()
        self._check_device(self.core)
        before = os_threads()
        self.compiled, self.load_s = timed_load(self._compile)
        self.readback = {"os_threads_before_load": before}
        for key in READBACK_KEYS:
            try:
                self.readback[key] = plain(self.compiled.get_property(key))
            except Exception:  # noqa: BLE001 - property not supported by this plugin
                pass
        hint = self.readback.get("INFERENCE_PRECISION_HINT")  # the hint actually in force, as read back
        if hint is not None:
            self.compute_precision = PRECISION_WORDS.get(str(hint).lower(), str(hint).lower())
        try:
            self.readback["device_name"] = self.core.get_property(self.ov_device, "FULL_DEVICE_NAME")
        except Exception:  # noqa: BLE001
            pass
        self.timing = ("wall clock (perf_counter_ns) around InferRequest.infer() (synchronous); input tensor set "
                       "once before timing, as benchmark_app does")

    def _compile(self):
        self.model = self.core.read_model(str(self.spec.artifact))
        if self.input_shape and self.model.input(0).get_partial_shape().is_dynamic:
            # time the static shape asked for, as exported
            self.model.reshape({self.model.input(0): self.ov.PartialShape(self.input_shape)})
            self.notes.append(f"the IR has a dynamic input; reshaped to {self.input_shape} before compiling")
        return self.core.compile_model(self.model, self.ov_device, self.config())

    @classmethod
    def thread_notes(cls, threads: int, readback: dict) -> list[str]:
        notes = super().thread_notes(threads, readback)
        streams = readback.get("NUM_STREAMS")
        if streams is not None and int(streams) != 1:
            notes.append(f"{cls.name} runs {streams} streams, not 1")
        return notes

    def prepare(self, seed: int = 0) -> None:
        self.req = self.compiled.create_infer_request()
        shape = list(self.compiled.input(0).get_partial_shape().get_min_shape())
        check_batch([int(d) for d in shape], self.input_shape)
        if any(d == 0 for d in shape) and self.input_shape:
            shape = self.input_shape
        self.input_shape = [max(int(d), 1) for d in shape]
        self.x = random_input(self.input_shape, seed)
        self._set_input()
        self.call = self.req.infer

    def _set_input(self) -> None:
        self.req.set_input_tensor(self.ov.Tensor(self.x))

    def predict(self, inputs: list[np.ndarray], all_outputs: bool = False) -> list:
        req = self.compiled.create_infer_request()
        if all_outputs:
            return [tuple(np.array(r[o]) for o in self.compiled.outputs) for r in (req.infer({0: x}) for x in inputs)]
        out = self.compiled.output(0)
        return [np.array(req.infer({0: x})[out]) for x in inputs]

    def op_profile(self, runs: int, top: int) -> list[dict]:
        compiled = self.core.compile_model(self.model, self.ov_device, self.config(perf_count=True))
        req = compiled.create_infer_request()
        req.set_input_tensor(self.ov.Tensor(self.x))
        for _ in range(3):
            req.infer()
        totals: dict[str, float] = collections.defaultdict(float)
        counts: dict[str, int] = collections.defaultdict(int)
        for _ in range(runs):
            req.infer()
            for info in req.get_profiling_info():
                if str(info.status).endswith("EXECUTED") and "NOT" not in str(info.status):
                    totals[info.node_type] += info.real_time.total_seconds() * 1e6  # µs
                    counts[info.node_type] += 1
        return top_ops(totals, counts, runs, top, unit_ms=1e-3)
