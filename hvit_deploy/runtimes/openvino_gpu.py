"""``openvino-gpu``: an OpenVINO IR on OpenVINO's GPU plugin (Intel GPUs), f32 inference, input in device
memory where the plugin offers remote tensors."""
from __future__ import annotations

from .base import Unavailable, register_runtime, RuntimeSpec
from .openvino_cpu import OvRuntime


@register_runtime
class OvGpuRuntime(OvRuntime):
    name = "openvino-gpu"
    order = 60
    aliases = ("ov-gpu",)
    description = "OpenVINO, GPU plugin"
    device_kind = "gpu"
    needs_probe = True
    thread_keys = ()
    compute_precisions = ("fp32",)
    ov_device = "GPU"

    @classmethod
    def check(cls) -> None:
        import openvino as ov

        devices = ov.Core().available_devices
        if cls.ov_device not in devices:
            raise Unavailable(f"OpenVINO has no {cls.ov_device} device here (devices: " + ", ".join(devices) + ")")

    def config(self, perf_count: bool = False) -> dict:
        cfg = {"NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}  # the GPU plugin defaults to f16
        if perf_count:
            cfg["PERF_COUNT"] = "YES"
        return cfg

    def __init__(self, spec: RuntimeSpec | dict):
        super().__init__(spec)
        self.device = "GPU"

    def prepare(self, seed: int = 0) -> None:
        super().prepare(seed)
        where = "in device memory (remote tensor)" if self._remote else "in host memory; the plugin copies it"
        self.timing = (f"wall clock around InferRequest.infer() (synchronous: returns after the GPU finished); "
                       f"input set once before timing, {where}")

    def _set_input(self) -> None:
        self._remote = False
        try:  # a device-side input tensor keeps the host→device copy out of the timed call
            ctx = self.compiled.get_context()
            rt = ctx.create_tensor(self.ov.Type.f32, self.ov.Shape(self.input_shape), {})
            rt.copy_from(self.ov.Tensor(self.x))
            self.req.set_input_tensor(rt)
            self._rt = rt
            self._remote = True
        except Exception:  # noqa: BLE001 - older OpenVINO or a plugin without remote tensors
            self.req.set_input_tensor(self.ov.Tensor(self.x))
