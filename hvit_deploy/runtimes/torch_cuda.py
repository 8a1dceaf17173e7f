"""``torch-cuda``: the PyTorch module in eager mode on a CUDA GPU, each timed call ended by a synchronisation."""
from __future__ import annotations

from .base import Unavailable, register_runtime, RuntimeSpec
from .torch_cpu import TorchRuntime, under_inference_mode


@register_runtime
class TorchCudaRuntime(TorchRuntime):
    name = "torch-cuda"
    compute_precisions = ("fp32",)
    order = 40
    aliases = ("cuda", "torch-gpu")
    description = "PyTorch eager on a CUDA GPU"
    device_kind = "gpu"
    needs_probe = True
    torch_device = "cuda"

    @classmethod
    def check(cls) -> None:
        import torch

        if not torch.cuda.is_available():
            raise Unavailable("no CUDA device here (torch.cuda.is_available() is False)")

    def __init__(self, spec: RuntimeSpec | dict):
        self.check()
        super().__init__(spec)
        torch = self.torch
        self.device = f"cuda:{torch.cuda.current_device()}"
        self.readback["device_name"] = torch.cuda.get_device_name()
        self.readback["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
        self.timing = ("wall clock around model(x) + torch.cuda.synchronize(); input copied to the GPU before "
                       "timing, output left on the GPU")

    @under_inference_mode
    def prepare(self, seed: int = 0) -> None:
        super().prepare(seed)
        model, x, sync = self.model, self.x, self.torch.cuda.synchronize
        sync()

        def call():
            model(x)
            sync()

        self.call = self.scoped(call)
