"""``torch-cuda-graphs-bf16``: a CUDA graph replayed with the model and input cast to BF16
(``.to(torch.bfloat16)``); checked against FP32 eager before timing as ``torch-cuda-graphs-fp16`` is.

BF16 keeps FP32's range (no overflow where FP16 might) at 8 bits of mantissa: on the H200 it timed within 3%
of FP16 with a cosine of 0.9999 against FP32 (``docs/gpu.md``).
"""
from __future__ import annotations

from typing import ClassVar

from .base import register_runtime
from .torch_cuda_graphs_fp16 import TorchCudaGraphsFp16Runtime


@register_runtime
class TorchCudaGraphsBf16Runtime(TorchCudaGraphsFp16Runtime):
    name = "torch-cuda-graphs-bf16"
    order = 44
    aliases = ("cuda-graphs-bf16",)
    description = "PyTorch on a CUDA GPU, one captured CUDA graph replayed per run, in BF16"
    compute_precision: ClassVar[str] = "bf16"

    def dtype(self):
        return self.torch.bfloat16
