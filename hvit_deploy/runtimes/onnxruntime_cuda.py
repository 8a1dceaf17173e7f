"""``onnxruntime-cuda``: an ONNX artifact on ONNX Runtime's CUDA execution provider (needs onnxruntime-gpu),
input and outputs bound on the GPU, each timed call ended by ``synchronize_outputs``."""
from __future__ import annotations

from .base import Unavailable, register_runtime, RuntimeSpec
from .onnxruntime_cpu import OrtRuntime


@register_runtime
class OrtCudaRuntime(OrtRuntime):
    name = "onnxruntime-cuda"
    order = 50
    aliases = ("ort-cuda", "onnxruntime-gpu")
    description = "ONNX Runtime, CUDA execution provider"
    device_kind = "gpu"
    needs_probe = True
    provider = "CUDAExecutionProvider"
    provider_options = {"device_id": 0}
    ort_device = "cuda"

    @classmethod
    def check(cls) -> None:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if cls.provider not in have:
            raise Unavailable("onnxruntime-gpu is not installed here (providers: " + ", ".join(have) + ")")

    def __init__(self, spec: RuntimeSpec | dict):
        self.check()
        super().__init__(spec)
        self.device = "cuda:0"
        self.timing = ("wall clock around run_with_iobinding + synchronize_outputs; input copied to the GPU before "
                       "timing (IO binding), output bound on the GPU")

    def _make_call(self, run, io):
        sync = io.synchronize_outputs

        def call():
            run(io)
            sync()

        return call
