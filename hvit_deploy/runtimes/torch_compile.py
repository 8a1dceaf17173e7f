"""``torch-compile``: the PyTorch module compiled by ``torch.compile`` (inductor) on the CPU.

The peer a PyTorch user would pick instead of exporting: the same model (rewritten with the ONNX recipe, or as
written) compiled in inductor's ``default`` mode, beside the exported runtimes. ``torch-compile-cuda``
(:mod:`.torch_compile_cuda`) is the same on a CUDA GPU, where inductor also captures CUDA graphs.

Compiling happens in :meth:`prepare`, before the first timed call: the first ``COMPILE_CALLS`` calls (the ones
that trace, compile and, on CUDA, record graphs) are timed together as ``compile_s`` in ``readback``, apart from
``load_s`` (building the model). The compiled output is then compared with eager on the same input
(``compile_max_abs_vs_eager``, ``compile_cosine_vs_eager``); a difference beyond ``MAX_ABS`` plus
``REL_OF_SCALE`` of the output's scale, or a cosine below ``MIN_COSINE``, fails the entry before any timing.
The mode is the spec's ``compile_mode``, else the environment's ``HVIT_COMPILE_MODE``, else the runtime's
default. Inductor keeps its compiled kernels in its on-disk cache, so a second session compiles faster.
"""
from __future__ import annotations

import os
import shutil
import time
from typing import ClassVar

import numpy as np

from ..metrics import compare
from .base import RuntimeSpec, Unavailable, register_runtime
from .torch_cpu import TorchRuntime, under_inference_mode

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_CALLS = 3  # reduce-overhead needs three: warm-up, graph recording, first replay
MAX_ABS = 1e-4
REL_OF_SCALE = 1e-3
MIN_COSINE = 0.9999


def compile_mode(spec, default: str) -> str:
    """The inductor mode asked for (spec ``compile_mode``, else ``HVIT_COMPILE_MODE``, else ``default``)."""
    spec = RuntimeSpec.model_validate(spec) if isinstance(spec, dict) else spec
    mode = spec.compile_mode or os.environ.get("HVIT_COMPILE_MODE") or default
    if mode not in MODES:
        raise ValueError(f"unknown torch.compile mode {mode!r}; choose from {', '.join(MODES)}")
    return mode


def graph_breaks() -> int | None:
    try:
        from torch._dynamo.utils import counters

        return int(sum(counters["graph_break"].values()))
    except Exception:  # noqa: BLE001
        return None


def check_compiled(reference: np.ndarray, output: np.ndarray) -> dict:
    """Figures of the compiled ``output`` against eager's ``reference`` (both (B, ...)); raises RuntimeError
    when they differ beyond the tolerance."""
    ref = np.asarray(reference, dtype=np.float32).reshape(len(reference), -1)
    fig = compare([(ref, np.asarray(output, dtype=np.float32).reshape(len(output), -1))])
    allowed = MAX_ABS + REL_OF_SCALE * float(np.abs(ref).max(initial=0.0))
    figures = {"compile_max_abs_vs_eager": fig.max_abs, "compile_cosine_vs_eager": fig.min_cosine}
    if not (fig.finite and fig.max_abs <= allowed and fig.min_cosine >= MIN_COSINE):  # NaN fails too
        raise RuntimeError(f"torch.compile output differs from eager: max |diff| {fig.max_abs:.3g} (allowed "
                           f"{allowed:.3g}), cosine {fig.min_cosine:.6f} (need {MIN_COSINE})")
    return figures


class CompiledMixin:
    """Everything a torch.compile runtime adds to the eager runtime it is mixed into (``TorchRuntime`` on the CPU,
    ``TorchCudaRuntime`` on CUDA): the availability check and the mode before loading, compiling and checking in
    :meth:`prepare`, the compiled call timed, plain inference through the compiled module. A device form only
    says what differs: its ``check``, ``default_mode``, ``_sync`` and the words of its timing."""

    default_mode: ClassVar[str] = "default"
    # how the timed call is described (``{mode}``: the inductor mode in force)
    timing_text: ClassVar[str] = ("wall clock around compiled(x) (torch.compile, inductor, mode {mode}) under "
                                  "torch.inference_mode(); compiled before timing (readback compile_s)")

    def __init__(self, spec):
        self.check()
        self.compile_mode = compile_mode(spec, self.default_mode)
        super().__init__(spec)

    @under_inference_mode  # compiled in the mode it is called in (the compiled graph guards on it)
    def prepare(self, seed: int = 0) -> None:
        super().prepare(seed)
        self._compile_and_check()
        self.timing = self.timing_text.format(mode=self.compile_mode)

    @under_inference_mode  # as it was compiled
    def predict(self, inputs: list[np.ndarray], all_outputs: bool = False) -> list:
        t = self.torch
        fn = getattr(self, "compiled", self.model)
        return [fn(t.from_numpy(x).to(self.torch_device)).float().cpu().numpy() for x in inputs]

    def _compile_and_check(self) -> None:
        torch, x = self.torch, self.x
        eager = self.model(x).float().clone()
        before = graph_breaks()
        compiled = torch.compile(self.model, mode=self.compile_mode, dynamic=False)
        t0 = time.perf_counter()
        for _ in range(COMPILE_CALLS):
            out = compiled(x)
            self._sync()
        compile_s = time.perf_counter() - t0
        out = out.float().clone()
        after = graph_breaks()
        self.readback.update(compile_mode=self.compile_mode, compile_backend="inductor",
                             compile_s=round(compile_s, 3),
                             graph_breaks=None if before is None or after is None else after - before)
        self.readback.update(check_compiled(eager.cpu().numpy(), out.cpu().numpy()))
        self.compiled = compiled
        sync = self._sync

        def call():
            compiled(x)
            sync()

        self.call = self.scoped(call)

    def _sync(self) -> None:
        pass


def _cxx_compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("clang++") or shutil.which("c++")


@register_runtime
class TorchCompileRuntime(CompiledMixin, TorchRuntime):
    name = "torch-compile"
    compute_precisions = ("fp32",)
    order = 35
    aliases = ("compile", "torch-compile-cpu")
    description = "PyTorch compiled by torch.compile (inductor) on the CPU"

    @classmethod
    def check(cls) -> None:
        super().check()
        if _cxx_compiler() is None:
            raise Unavailable("torch.compile on the CPU needs a C++ compiler (g++ or clang++; none found)")
