"""``openvino``: an OpenVINO IR on OpenVINO's CPU plugin.

Compile settings, everywhere the project runs an IR (validation, ``hvit-bench``, the benchmark scripts):
what ``benchmark_app -hint none -nstreams 1 -nthreads N`` sets (one stream, ``INFERENCE_NUM_THREADS`` = threads;
0 leaves the plugin's default), plus ``INFERENCE_PRECISION_HINT=f32`` so an fp32 IR runs in fp32 (CPUs with
bf16 or AMX would otherwise default to bf16, and validation would check that fast path, not the IR). An INT8
IR keeps its quantised operations under this hint; only the floating-point parts stay in f32.

BF16 compute (``RuntimeSpec.compute_precision="bf16"``, the ``bf16`` form of ``hvit-bench``, an IR written by
``hvit-export --precision bf16``): the same FP32 IR compiled with ``INFERENCE_PRECISION_HINT=bf16``. An IR
whose ``rt_info`` carries ``runtime_options/INFERENCE_PRECISION_HINT`` (what ``hvit-export --precision bf16``
writes) is compiled with that hint when the spec asks for nothing. OpenVINO's CPU plugin itself does *not* apply
that rt_info key (2026.4 applies only its KV-cache and dynamic-quantization runtime_options), so this runtime
passes it explicitly. What the compiled model reports back is what is recorded as ``compute_precision``: a CPU
without BF16 arithmetic reads back f32 whatever was asked, and then a note says so.
"""
from __future__ import annotations

import collections

import numpy as np

from .base import Runtime, RuntimeSpec, Unavailable, check_batch, os_threads, random_input, register_runtime, timed_load, top_ops
from .int8_weights import openvino_weight_bits, saturation_note

READBACK_KEYS = ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT",
                 "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "SCHEDULING_CORE_TYPE", "EXECUTION_DEVICES")


# OpenVINO's element types as the project's compute-precision words
PRECISION_WORDS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
HINTS = {word: hint for hint, word in PRECISION_WORDS.items()}
# where an IR asks for a compute precision (written by hvit-export --precision bf16)
HINT_RT_INFO = ("runtime_options", "INFERENCE_PRECISION_HINT")


def ir_precision_hint(model) -> str | None:
    """The compute precision an IR's rt_info asks for (``runtime_options/INFERENCE_PRECISION_HINT``), as the
    project's word (``bf16``), or None."""
    try:
        if not model.has_rt_info(list(HINT_RT_INFO)):
            return None
        value = str(model.get_rt_info(list(HINT_RT_INFO)).astype(str)).strip().lower()
    except Exception:  # noqa: BLE001 - an rt_info entry of another shape asks for nothing we know
        return None
    return PRECISION_WORDS.get(value, value)


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
    compute_precisions = ("fp32", "bf16")
    asked_precision = "fp32"   # what the session asks OpenVINO for (the spec's, else the IR's rt_info hint)

    def config(self, perf_count: bool = False) -> dict:
        cfg = {"NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": HINTS[self.asked_precision]}
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
        self.readback["asked_precision"] = self.asked_precision
        if self.asked_precision != "fp32" and self.compute_precision != self.asked_precision:
            from ..utils.cpu import has_bf16

            why = "" if has_bf16() else " (this CPU has no BF16 arithmetic)"
            self.notes.append(f"asked OpenVINO for INFERENCE_PRECISION_HINT={HINTS[self.asked_precision]}; it "
                              f"compiled the model to compute in {self.compute_precision}{why}")
        try:
            self.readback["device_name"] = self.core.get_property(self.ov_device, "FULL_DEVICE_NAME")
        except Exception:  # noqa: BLE001
            pass
        self.timing = ("wall clock (perf_counter_ns) around InferRequest.infer() (synchronous); input tensor set "
                       "once before timing, as benchmark_app does")
        if self.device_kind == "cpu":  # int8 sums that saturate on this CPU? (int8_weights)
            bits = openvino_weight_bits(self.model)
            if bits is not None:
                self.readback["int8_weight_bits"] = bits
                note = saturation_note(bits, "OpenVINO", "quantization.openvino_overflow_fix: enable")
                if note:
                    self.notes.append(note)

    def _compile(self):
        self.model = self.core.read_model(str(self.spec.artifact))
        asked = self.spec.compute_precision  # checked against compute_precisions when the session was opened
        if asked is None:
            asked = ir_precision_hint(self.model) or "fp32"
            if asked not in self.compute_precisions or asked not in HINTS:
                self.notes.append(f"the IR's rt_info asks for INFERENCE_PRECISION_HINT {asked}, which {self.name} "
                                  "does not offer; compiled with f32")
                asked = "fp32"
        self.asked_precision = asked
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
