"""``torch-compile-cuda``: ``torch.compile`` (inductor) on a CUDA GPU, by default in ``max-autotune`` mode
(inductor's kernel autotuning plus CUDA graphs); ``reduce-overhead`` (CUDA graphs without the autotuning, a
much shorter compile) where the time budget is short: spec ``compile_mode`` or ``HVIT_COMPILE_MODE``.

Compile time (``compile_s``) and the check against eager FP32 are those of ``torch-compile``
(:mod:`.torch_compile`); each timed call ends with a device synchronisation.
"""
from __future__ import annotations

import importlib.util
from typing import ClassVar

from .base import Unavailable, register_runtime
from .torch_compile import CompiledMixin
from .torch_cuda import TorchCudaRuntime


@register_runtime
class TorchCompileCudaRuntime(CompiledMixin, TorchCudaRuntime):
    """Loading, compiling, the check against eager and plain inference are :class:`.torch_compile.CompiledMixin`'s
    (the CPU runtime's code); this class adds the CUDA check, the mode and the synchronisation."""

    name = "torch-compile-cuda"
    order = 45
    aliases = ("compile-cuda",)
    description = "PyTorch compiled by torch.compile (inductor, CUDA graphs) on a CUDA GPU"
    default_mode: ClassVar[str] = "max-autotune"
    timing_text: ClassVar[str] = ("wall clock around compiled(x) + torch.cuda.synchronize() (torch.compile, "
                                  "inductor, mode {mode}); compiled before timing (readback compile_s), input on "
                                  "the GPU")

    @classmethod
    def check(cls) -> None:
        super().check()
        if importlib.util.find_spec("triton") is None:
            raise Unavailable("torch.compile on CUDA needs triton (not installed)")

    def _sync(self) -> None:
        self.torch.cuda.synchronize()
