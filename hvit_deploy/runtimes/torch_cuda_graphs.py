"""``torch-cuda-graphs``: the PyTorch module on a CUDA GPU, captured once as a CUDA graph and replayed.

Batch-1 inference of these small hybrid models on a large GPU is bound by kernel launches, not arithmetic;
replaying a captured graph launches the whole network at once. The graph is captured after a few eager runs
on a side stream (as ``torch.cuda.graphs`` requires), and its replayed output is compared with eager FP32 on
the same input before any timing: a difference beyond ``MAX_ABS`` (plus 1e-3 of the output's scale) fails the
entry instead of timing a wrong graph. The figure is recorded in ``readback``.

Subclasses replay the graph in another compute precision (:mod:`.torch_cuda_graphs_fp16`,
:mod:`.torch_cuda_graphs_bf16`): they override :meth:`TorchCudaGraphsRuntime.to_compute_precision` (cast
before capture) and :meth:`TorchCudaGraphsRuntime.check_replay` (what "the same output" means there).
"""
from __future__ import annotations

from typing import ClassVar

from .base import register_runtime
from .torch_cpu import under_inference_mode
from .torch_cuda import TorchCudaRuntime

MAX_ABS = 1e-4


def capture_graph(torch, model, x):
    """(graph, output): ``model(x)`` captured as one CUDA graph after 3 eager runs on a side stream, replayed
    once and synchronised (``output`` is the graph's static output tensor)."""
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
    return graph, out


@register_runtime
class TorchCudaGraphsRuntime(TorchCudaRuntime):
    name = "torch-cuda-graphs"
    order = 41
    aliases = ("cuda-graphs",)
    description = "PyTorch on a CUDA GPU, one captured CUDA graph replayed per run"
    compute_precision: ClassVar[str] = "fp32"

    @under_inference_mode  # eager reference and capture; the replay needs no mode
    def prepare(self, seed: int = 0) -> None:
        super().prepare(seed)
        torch = self.torch
        eager = self.model(self.x).float().clone()  # the FP32 eager reference, on the same input
        self.to_compute_precision()
        self.readback["compute_precision"] = self.compute_precision
        graph, out = capture_graph(torch, self.model, self.x)
        self.check_replay(eager, out)
        self._graph, self._out = graph, out
        replay, sync = graph.replay, torch.cuda.synchronize

        def call():
            replay()
            sync()

        self.call = call
        self.timing = ("wall clock around CUDAGraph.replay() + torch.cuda.synchronize(); graph captured once "
                       f"after warm-up ({self.compute_precision} weights and input), input resident on the GPU, "
                       "output left there")

    def to_compute_precision(self) -> None:
        """Cast the model and :attr:`x` to the precision the graph computes in (FP32: nothing to do)."""

    def check_replay(self, eager, out) -> None:
        """Raise when the replayed output ``out`` is not eager FP32's ``eager``; record the figures."""
        diff = float((out.float() - eager).abs().max())
        scale = float(eager.abs().max())
        self.readback["graph_max_abs_vs_eager"] = diff
        if not diff <= MAX_ABS + 1e-3 * scale:  # NaN fails too
            raise RuntimeError(f"CUDA graph replay differs from eager by {diff:.3g} (allowed {MAX_ABS:g})")
