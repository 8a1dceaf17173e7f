"""``torch``: the PyTorch module in eager mode on the CPU (rewritten with the ONNX recipe, or as written).

BF16 compute (``RuntimeSpec.compute_precision="bf16"``: the eager reference of ``hvit-bench``'s ``bf16`` form):
the FP32 module run under ``torch.autocast("cpu", dtype=torch.bfloat16)``, weights kept in FP32 (autocast casts
what its op lists name: matmuls, convolutions, linear layers, to BF16; reductions and normalisations stay FP32).

The rewritten form of every torch runtime (CPU and CUDA) applies one export recipe's rewrites: the ONNX
recipe's by default (the form the ONNX and OpenVINO artifacts are exported from, so eager and exported entries
time the same computation), or another recipe's: the spec's ``rewrite_format``, else the environment's
``HVIT_TORCH_REWRITES`` (workers inherit it; profiles cannot carry runtime options). ACmix-ResNet is where it
matters on a GPU: the ONNX recipe computes its 7×7 unfold of ``k - pe`` as two one-hot convs
(``acmix.rpe_into_keys``, ``acmix.unfold_as_separable_conv``, chosen for ONNX Runtime on CPUs), 5.4 GFLOP at 224
(11.1 with the single 49-kernel conv it used before); ``HVIT_TORCH_REWRITES=openvino`` keeps ``nn.Unfold`` (4.3
GFLOP, equal outputs; ``docs/gpu.md``).
"""
from __future__ import annotations

import functools
import os

import numpy as np

from .base import Runtime, os_threads, random_input, register_runtime, timed_load, top_ops, RuntimeSpec

# what the rewritten torch entry applies: the ONNX recipe (the form every other runtime is exported from)
REWRITE_FORMAT = "onnx"
REWRITE_FORMATS = ("onnx", "openvino", "coreml")  # the recipes' rewrite lists (hvit_deploy.recipes.Format)
REWRITES_ENV = "HVIT_TORCH_REWRITES"


def rewrite_format(spec: RuntimeSpec | dict) -> str:
    """Whose recipe rewrites the torch module: spec ``rewrite_format``, else ``HVIT_TORCH_REWRITES``, else ONNX's."""
    spec = spec if isinstance(spec, RuntimeSpec) else RuntimeSpec.model_validate(spec)
    fmt = spec.rewrite_format or os.environ.get(REWRITES_ENV) or REWRITE_FORMAT
    if fmt not in REWRITE_FORMATS:
        raise ValueError(f"unknown rewrite recipe {fmt!r} for the torch runtimes; choose from "
                         f"{', '.join(REWRITE_FORMATS)}")
    return fmt


def under_inference_mode(method):
    """A torch runtime's method run under ``torch.inference_mode()``: :meth:`TorchRuntime.prepare` and its
    overrides, whose eager runs, compilation or graph capture must see the mode the timed calls run in, and
    ``predict`` (never relying on a mode a caller may have left)."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with self.torch.inference_mode():
            return method(self, *args, **kwargs)
    return wrapped


def build_model(spec: RuntimeSpec | dict):
    import torch

    from ..factory import create_model
    from ..rewriting import rewrite as apply_rewrite

    spec = spec if isinstance(spec, RuntimeSpec) else RuntimeSpec.model_validate(spec)
    torch.manual_seed(0)  # reproducible random weights when no checkpoint is given
    m = create_model(spec.model, spec.checkpoint, input_size=spec.input_size)
    if spec.rewrite:
        m = apply_rewrite(m, rewrite_format(spec), batch_size=spec.batch_size)
    return m


def parallel_backend(torch) -> str | None:
    try:
        for line in torch.__config__.parallel_info().splitlines():
            if line.startswith("ATen parallel backend"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001
        pass
    return None


def _device_time(ev) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        v = getattr(ev, name, None)
        if v is not None:
            return float(v)
    return 0.0


@register_runtime
class TorchRuntime(Runtime):
    name = "torch"
    order = 10
    format = None
    package = "torch"
    aliases = ("pytorch", "torch-cpu")
    description = "PyTorch eager on the CPU"
    thread_keys = ("intra_op_threads",)
    torch_device = "cpu"
    compute_precisions = ("fp32", "bf16")

    def __init__(self, spec: RuntimeSpec | dict):
        super().__init__(spec)
        import torch

        self.torch = torch
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set once in this process
            pass
        before = os_threads()
        self.model, self.load_s = timed_load(lambda: build_model(self.spec))
        self.rewrites = list(getattr(self.model, "hvit_rewrites", []))
        self.input_shape = [self.spec.batch_size, *self.model.hvit_input_size]
        self.model.to(self.torch_device)
        self.model.requires_grad_(False)  # an inference model: autograd has nothing to record, in any mode
        self.readback = {
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "parallel_backend": parallel_backend(torch),
            "os_threads_before_load": before,
        }
        if self.spec.rewrite:
            self.readback["rewrites_of"] = rewrite_format(self.spec)  # whose recipe made the rewritten form
        self.timing = "wall clock (perf_counter_ns) around model(x) under torch.inference_mode(); input prepared before timing"
        if self.spec.compute_precision == "bf16":
            self.compute_precision = "bf16"
            self.readback["autocast"] = "cpu, torch.bfloat16"
            self.timing += "; under torch.autocast('cpu', dtype=torch.bfloat16)"

    def _autocast(self):
        """The context a run computes in: bfloat16 autocast for a bf16 session, else nothing."""
        import contextlib

        if self.spec.compute_precision == "bf16" and self.torch_device == "cpu":
            return self.torch.autocast("cpu", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def scoped(self, fn):
        """``fn`` run under ``torch.inference_mode()`` (and bfloat16 autocast for a bf16 session) on each call: the
        form of every timed call. The mode is entered per call, never held for the session's life: a guard held on
        the runtime is undone whenever the runtime is collected, which in a process with other runtimes or a
        caller's own ``with torch.inference_mode()`` switched the mode off in the middle of their calls. It costs
        about 2 µs a call (``with torch.inference_mode(): pass``, measured here), under 0.1 % of the fastest eager
        call timed (4 ms, efficientmod_xxs on an H200)."""
        mode, autocast = self.torch.inference_mode, self._autocast
        if self.spec.compute_precision == "bf16":
            def call():
                with mode(), autocast():
                    return fn()
        else:
            def call():
                with mode():
                    return fn()
        return call

    @under_inference_mode
    def prepare(self, seed: int = 0) -> None:
        self.x = self.torch.from_numpy(random_input(self.input_shape, seed)).to(self.torch_device)
        model, x = self.model, self.x
        self.call = self.scoped(lambda: model(x))

    @under_inference_mode
    def predict(self, inputs: list[np.ndarray], all_outputs: bool = False) -> list:
        t = self.torch
        with self._autocast():
            return [self.model(t.from_numpy(x).to(self.torch_device)).float().cpu().numpy() for x in inputs]

    def op_profile(self, runs: int, top: int) -> list[dict]:
        from torch.profiler import ProfilerActivity, profile

        on_gpu = self.torch_device != "cpu"
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        for _ in range(3):
            self.call()
        with profile(activities=acts) as prof:
            for _ in range(runs):
                self.call()
        totals, counts = {}, {}
        for ev in prof.key_averages():
            t = _device_time(ev) if on_gpu else ev.self_cpu_time_total
            if t > 0:
                totals[ev.key] = totals.get(ev.key, 0.0) + t
                counts[ev.key] = counts.get(ev.key, 0) + ev.count
        return top_ops(totals, counts, runs, top, unit_ms=1e-3)  # µs → ms

