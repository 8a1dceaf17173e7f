"""``executorch``: an ExecuTorch ``.pte`` on ``executorch.runtime`` (CPU; XNNPACK runs the delegated subgraphs).

Threads: ExecuTorch's XNNPACK delegate and its optimized kernels share one process-wide thread pool; it is reset
to ``threads`` before the program loads (0: left as it is, the pool's default of one thread per performance
core) and its size is read back (``threadpool_threads``). The timed call is ``Method.execute`` on one input
tensor made once; the method's outputs are the runtime's own.
"""
from __future__ import annotations

import numpy as np

from .base import Runtime, Unavailable, os_threads, random_input, register_runtime, timed_load


@register_runtime
class ExecuTorchRuntime(Runtime):
    name = "executorch"
    order = 32
    format = "executorch"
    package = "executorch"
    aliases = ("et", "executorch-xnnpack")
    description = "ExecuTorch runtime, XNNPACK delegate (CPU)"
    thread_keys = ("threadpool_threads",)

    def __init__(self, spec: dict):
        super().__init__(spec)
        try:
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime as EtRuntime, Verification
        except ImportError as e:
            raise Unavailable(f"executorch is not installed ({e})") from None
        if self.threads:
            portable_lib._unsafe_reset_threadpool(self.threads)
        before = os_threads()
        program, self.load_s = timed_load(
            lambda: EtRuntime.get().load_program(str(self.spec.artifact), verification=Verification.Minimal))
        self.method = program.load_method("forward")
        after = os_threads()
        self.program = program
        self.readback = {
            "threadpool_threads": portable_lib._threadpool_get_thread_count(),
            "backends": list(EtRuntime.get().backend_registry.registered_backend_names),
            "os_threads_added_by_load": (after - before) if (after is not None and before is not None) else None,
        }
        self.timing = ("wall clock (perf_counter_ns) around Method.execute on one input tensor made once before "
                       "timing")

    def _input_shape(self) -> list[int]:
        meta = self.method.metadata.input_tensor_meta(0)
        return list(meta.sizes())

    def prepare(self, seed: int = 0) -> None:
        import torch

        self.input_shape = self.input_shape or self._input_shape()
        self.x = random_input(self.input_shape, seed)
        t = torch.from_numpy(self.x)
        self.call = lambda: self.method.execute([t])

    def predict(self, inputs: list[np.ndarray], all_outputs: bool = False) -> list:
        import torch

        outs = []
        for x in inputs:
            got = [o.numpy() for o in self.method.execute([torch.from_numpy(np.ascontiguousarray(x))])]
            outs.append(tuple(got) if all_outputs else got[0])
        return outs
