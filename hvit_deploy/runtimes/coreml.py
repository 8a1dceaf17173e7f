"""``coreml``: a Core ML package through coremltools' ``MLModel.predict`` (macOS only; Core ML picks CPU, GPU
or Neural Engine itself, and schedules its own threads)."""
from __future__ import annotations

import numpy as np

from .base import Runtime, Unavailable, on_macos, random_input, register_runtime, timed_load, RuntimeSpec


@register_runtime
class CoremlRuntime(Runtime):
    name = "coreml"
    order = 70
    format = "coreml"
    package = "coremltools"
    aliases = ("core-ml", "mlpackage")
    description = "Core ML through coremltools (macOS)"
    device_kind = "auto"
    needs_probe = True
    compute_precision = None  # Core ML picks the unit, and with it the arithmetic; nothing reads it back

    @classmethod
    def quick_check(cls) -> tuple[bool, str | None]:
        if not on_macos():
            return True, cls._not_macos()
        return super().quick_check()

    @staticmethod
    def _not_macos() -> str:
        import sys

        return f"Core ML runs on macOS only (this is {sys.platform})"

    @classmethod
    def check(cls) -> None:
        if not on_macos():
            raise Unavailable(cls._not_macos())
        super().check()

    def __init__(self, spec: RuntimeSpec | dict):
        self.check()
        super().__init__(spec)
        import coremltools as ct

        units = getattr(self.spec, "compute_units", None) or "ALL"  # validation asks for CPU_ONLY
        self.mlmodel, self.load_s = timed_load(
            lambda: ct.models.MLModel(str(self.spec.artifact), compute_units=getattr(ct.ComputeUnit, units)))
        desc = self.mlmodel.get_spec().description
        self.input_name = desc.input[0].name
        self.output_name = desc.output[0].name
        self.device = "ALL (Core ML chooses CPU/GPU/ANE)"
        self.readback = {"threads": "not controllable: Core ML schedules its own threads", "compute_units": units}
        self.notes.append("--threads does not apply to Core ML")
        self.timing = ("wall clock around MLModel.predict(); the Python API converts the numpy input on every "
                       "call, so that copy is inside the timed region")

    def prepare(self, seed: int = 0) -> None:
        self.x = random_input(self.input_shape, seed)
        feed, predict = {self.input_name: self.x}, self.mlmodel.predict
        self.call = lambda: predict(feed)

    def predict(self, inputs: list[np.ndarray], all_outputs: bool = False) -> list:
        return [np.asarray(self.mlmodel.predict({self.input_name: x})[self.output_name]) for x in inputs]
