"""``torch-cuda-fp16``: the PyTorch module in half precision on a CUDA GPU (weights and input in FP16).

Checked against FP32 eager on the same input before timing: the cosine of the logits must stay at or above
``MIN_COSINE`` and the top-1 class must agree, or the entry fails rather than timing a model that is wrong in
half precision; both figures are recorded in ``readback``.
"""
from __future__ import annotations

from ..metrics import cosine_rows
from .base import register_runtime
from .torch_cpu import under_inference_mode
from .torch_cuda import TorchCudaRuntime

MIN_COSINE = 0.999


@register_runtime
class TorchCudaFp16Runtime(TorchCudaRuntime):
    name = "torch-cuda-fp16"
    order = 42
    aliases = ("cuda-fp16",)
    description = "PyTorch on a CUDA GPU in FP16"
    compute_precision = "fp16"

    @under_inference_mode
    def prepare(self, seed: int = 0) -> None:
        super().prepare(seed)
        torch = self.torch
        ref = self.model(self.x).float().flatten().cpu().numpy()
        self.model.half()
        self.x = self.x.half()
        got = self.model(self.x).float().flatten().cpu().numpy()
        cos = float(cosine_rows(ref[None], got[None])[0])  # the project's one cosine (hvit_deploy.metrics)
        same_top1 = bool(ref.argmax() == got.argmax())
        self.readback.update(fp16_cosine_vs_fp32=cos, fp16_top1_agrees=same_top1)
        if not (cos >= MIN_COSINE and same_top1):  # NaN fails too
            raise RuntimeError(f"FP16 output differs from FP32 eager: cosine {cos:.5f} (need {MIN_COSINE}), "
                               f"top-1 {'agrees' if same_top1 else 'differs'}")
        model, x, sync = self.model, self.x, torch.cuda.synchronize

        def call():
            model(x)
            sync()

        self.call = self.scoped(call)
        self.timing = ("wall clock around model(x) + torch.cuda.synchronize() with FP16 weights and input; input "
                       "on the GPU before timing, output left there")
