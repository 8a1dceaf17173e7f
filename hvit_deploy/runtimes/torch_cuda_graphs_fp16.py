"""``torch-cuda-graphs-fp16``: a CUDA graph replayed with the model and input cast to FP16 (``.half()``).

The fastest batch-1 form plain PyTorch offers on a large GPU (the H200 plain-loop figures in
``docs/gpu.md``): the graph removes the launch overhead, half precision the memory traffic. Before capture the
FP32 eager output is taken on the same input; the replayed output must then keep the cosine at or above
``MIN_COSINE`` and the top-1 class (a class whose FP32 logit lies within the precision's rounding step of the
best counts as agreeing: :func:`tie_tolerance`), or the entry fails instead of timing a wrong model. The
figures (``cosine_vs_fp32``, ``top1_agrees``, ``max_abs_vs_fp32``, ``compute_precision``) go to ``readback``.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..metrics import compare
from .base import register_runtime
from .torch_cpu import under_inference_mode
from .torch_cuda_fp16 import MIN_COSINE
from .torch_cuda_graphs import TorchCudaGraphsRuntime

# the spacing of the format's numbers just above 1.0 (numpy / torch finfo eps)
EPS = {"fp16": 2.0 ** -10, "bf16": 2.0 ** -7}


def tie_tolerance(reference: np.ndarray, precision: str) -> float:
    """Logits closer than this to the best one cannot be told apart in ``precision``: one rounding step at the
    output's scale."""
    return EPS[precision] * float(np.abs(reference).max(initial=0.0))


def check_low_precision(reference: np.ndarray, output: np.ndarray, precision: str) -> dict:
    """Figures of ``output`` (computed in ``precision``) against the FP32 ``reference``, both (B, classes);
    raises RuntimeError when the cosine is below ``MIN_COSINE``, the top-1 class differs or a value is not
    finite."""
    ref = np.asarray(reference, dtype=np.float32)
    fig = compare([(ref, np.asarray(output, dtype=np.float32))], tie_atol=tie_tolerance(ref, precision))
    figures = {"compute_precision": precision, "cosine_vs_fp32": fig.min_cosine,
               "top1_agrees": fig.top1 == 1.0, "max_abs_vs_fp32": fig.max_abs, "finite": fig.finite}
    if not (fig.finite and fig.min_cosine >= MIN_COSINE and fig.top1 == 1.0):  # NaN fails too
        raise RuntimeError(
            f"{precision.upper()} output differs from FP32 eager: cosine {fig.min_cosine:.5f} (need {MIN_COSINE}), "
            f"top-1 {'agrees' if fig.top1 == 1.0 else 'differs'}{'' if fig.finite else ', non-finite values'}")
    return figures


@register_runtime
class TorchCudaGraphsFp16Runtime(TorchCudaGraphsRuntime):
    name = "torch-cuda-graphs-fp16"
    order = 43
    aliases = ("cuda-graphs-fp16",)
    description = "PyTorch on a CUDA GPU, one captured CUDA graph replayed per run, in FP16"
    compute_precision: ClassVar[str] = "fp16"

    def dtype(self):
        return self.torch.float16

    def to_compute_precision(self) -> None:
        self.model.to(self.dtype())
        self.x = self.x.to(self.dtype())

    @under_inference_mode
    def predict(self, inputs: list[np.ndarray], all_outputs: bool = False) -> list:
        """Eager inference in the compute precision once :meth:`prepare` has cast the model (FP32 before)."""
        t = self.torch
        dt = next(self.model.parameters()).dtype
        return [self.model(t.from_numpy(x).to(self.torch_device, dt)).float().cpu().numpy() for x in inputs]

    def check_replay(self, eager, out) -> None:
        ref = eager.reshape(len(eager), -1).cpu().numpy()
        got = out.float().reshape(len(out), -1).cpu().numpy()
        self.readback.update(check_low_precision(ref, got, self.compute_precision))
