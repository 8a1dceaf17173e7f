"""``torch-cuda-graphs``: the PyTorch module on a CUDA GPU, captured once as a CUDA graph and replayed.

Batch-1 inference of these small hybrid models on a large GPU is bound by kernel launches, not arithmetic;
replaying a captured graph launches the whole network at once. The graph is captured after a few eager runs
on a side stream (as ``torch.cuda.graphs`` requires), and its replayed output is compared with eager FP32 on
the same input before any timing: a difference beyond ``MAX_ABS`` (plus 1e-3 of the output's scale) fails the
entry instead of timing a wrong graph. The figure is recorded in ``readback``.
"""
from __future__ import annotations

from .base import register_runtime
from .torch_cuda import TorchCudaRuntime

MAX_ABS = 1e-4


@register_runtime
class TorchCudaGraphsRuntime(TorchCudaRuntime):
    name = "torch-cuda-graphs"
    order = 41
    aliases = ("cuda-graphs",)
    description = "PyTorch on a CUDA GPU, one captured CUDA graph replayed per run"

    def prepare(self, seed: int = 0) -> None:
        super().prepare(seed)
        torch = self.torch
        model, x = self.model, self.x
        eager = model(x).float().clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = model(x)
        graph.replay()
        torch.cuda.synchronize()
        diff = float((out.float() - eager).abs().max())
        scale = float(eager.abs().max())
        self.readback["graph_max_abs_vs_eager"] = diff
        if not diff <= MAX_ABS + 1e-3 * scale:  # NaN fails too
            raise RuntimeError(f"CUDA graph replay differs from eager by {diff:.3g} (allowed {MAX_ABS:g})")
        self._graph, self._out = graph, out
        replay, sync = graph.replay, torch.cuda.synchronize

        def call():
            replay()
            sync()

        self.call = call
        self.timing = ("wall clock around CUDAGraph.replay() + torch.cuda.synchronize(); graph captured once "
                       "after warm-up, input resident on the GPU, output left there")
