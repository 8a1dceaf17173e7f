"""``litert``: a LiteRT ``.tflite`` on ai-edge-litert's interpreter (CPU, its XNNPACK delegate applied by default).

Threads: the interpreter's ``num_threads`` = threads (0: the interpreter's default, which is one thread); the
XNNPACK delegate takes the same count. The interpreter reports no thread count back, so the readback records what
it was given and, as an independent check, how many OS threads creating it added (XNNPACK's pool adds
threads - 1). The timed call is ``Interpreter.invoke`` with the input set once before timing; outputs stay in the
interpreter's own tensors.

An INT8 ``.tflite`` (PT2E through litert-torch) may take and give INT8 tensors: the float input is then quantized
with the scale and zero point the model carries for its input (outside the timed call), and INT8 outputs are
dequantized with theirs, so the runtime takes and gives float like every other.
"""
from __future__ import annotations

import io

import numpy as np

from ..utils.native_io import native_stderr_into
from .base import Runtime, Unavailable, os_threads, random_input, register_runtime, timed_load


@register_runtime
class LiteRtRuntime(Runtime):
    name = "litert"
    order = 33
    format = "litert"
    package = "ai_edge_litert"
    aliases = ("litert-cpu", "litert-xnnpack")
    description = "LiteRT interpreter, XNNPACK delegate (CPU)"
    thread_keys = ("num_threads",)

    def __init__(self, spec: dict):
        super().__init__(spec)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise Unavailable(f"ai-edge-litert is not installed ({e})") from None
        before = os_threads()
        with native_stderr_into(io.StringIO()):   # absl's "log messages before InitializeLog" and the delegate's note
            self.interp, self.load_s = timed_load(lambda: self._load(Interpreter))
        after = os_threads()
        self.inp = self.interp.get_input_details()[0]
        self.outs = self.interp.get_output_details()
        self.readback = {
            "num_threads": self.threads or 1,
            "delegate": "XNNPACK (the interpreter's default)",
            "os_threads_added_by_interpreter": (after - before) if (after is not None and before is not None) else None,
        }
        self.timing = "wall clock (perf_counter_ns) around Interpreter.invoke; the input set once before timing"
        if np.dtype(self.inp["dtype"]) != np.float32:  # an INT8 .tflite: the float input quantized before timing
            self.readback["input_dtype"] = np.dtype(self.inp["dtype"]).name
            self.timing += f" (quantized to {np.dtype(self.inp['dtype']).name} with the model's scale first)"

    def _load(self, interpreter_cls):
        interp = interpreter_cls(model_path=str(self.spec.artifact), num_threads=self.threads or None)
        interp.allocate_tensors()
        return interp

    @classmethod
    def thread_notes(cls, threads: int, readback: dict) -> list[str]:
        notes = super().thread_notes(threads or 1, readback)
        added = readback.get("os_threads_added_by_interpreter")
        if added is not None and added > max(threads, 1):
            notes.append(f"{cls.name} interpreter added {added} OS threads for {threads} threads")
        return notes

    def prepare(self, seed: int = 0) -> None:
        want = [int(d) for d in self.inp["shape"]]
        if self.input_shape and list(self.input_shape) != want:
            raise Unavailable(f"the .tflite takes {want}, not {list(self.input_shape)} (static shape)")
        self.input_shape = want
        self.x = random_input(self.input_shape, seed)
        self.interp.set_tensor(self.inp["index"], self._quantized_input(self.x))
        self.call = self.interp.invoke

    def predict(self, inputs: list[np.ndarray], all_outputs: bool = False) -> list:
        results = []
        for x in inputs:
            self.interp.set_tensor(self.inp["index"], self._quantized_input(x))
            self.interp.invoke()
            got = [_dequantized(self.interp.get_tensor(o["index"]), o) for o in self.outs]
            results.append(tuple(got) if all_outputs else got[0])
        return results

    def _quantized_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the model's input type: float32, or INT8/UINT8 with the input's own scale and zero point."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        kind = np.dtype(self.inp["dtype"])
        if kind == np.float32:
            return x
        scale, zero = self.inp["quantization"]
        info = np.iinfo(kind)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(kind)


def _dequantized(y: np.ndarray, detail: dict) -> np.ndarray:
    if y.dtype == np.float32 or not np.issubdtype(y.dtype, np.integer):
        return y
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
