"""``onnxruntime-openvino``: an ONNX artifact on ONNX Runtime with its OpenVINO execution provider
(the ``onnxruntime-openvino`` package, which replaces plain ``onnxruntime``), CPU device, fp32.

Everything else — session options, IO binding, the timed call, profiling — is ONNX Runtime's CPU runtime.
"""
from __future__ import annotations

from .base import Unavailable, register_runtime
from .onnxruntime_cpu import OrtRuntime


@register_runtime
class OrtOpenvinoRuntime(OrtRuntime):
    name = "onnxruntime-openvino"
    order = 80
    aliases = ("ort-openvino", "ort-ov")
    description = "ONNX Runtime, OpenVINO execution provider (CPU)"
    needs_probe = True
    provider = "OpenVINOExecutionProvider"
    provider_options = {"device_type": "CPU", "precision": "FP32"}

    @classmethod
    def check(cls) -> None:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if cls.provider not in have:
            raise Unavailable("onnxruntime-openvino is not installed here (providers: " + ", ".join(have) + ")")

    def _providers(self) -> list:
        opts = dict(self.provider_options)
        if self.threads:
            opts["num_of_threads"] = str(self.threads)
        return [(self.provider, opts), "CPUExecutionProvider"]
