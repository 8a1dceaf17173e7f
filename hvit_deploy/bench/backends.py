"""The runtimes ``hvit-bench`` times, as they run inside a worker process.

Each backend loads one model (the PyTorch module, or the artifact ``hvit-export`` wrote), places one input where
the runtime reads it, and offers ``call``: the one thing inside the timed region. The rules every backend keeps:

* CPU runtimes use ``threads`` intra-op threads, one stream, sequential execution; what the runtime reports
  back is recorded (``readback``), with the OS thread count of the process as an independent check.
* GPU backends copy the input to the device before timing and end each timed call with a device
  synchronisation, so a run is not counted before it has finished; outputs stay on the device.
* ``op_profile`` runs extra, separately compiled sessions after the timed runs (profiling slows a runtime
  down, so it never overlaps the measurement).

Only this module imports runtimes, and only the one a worker asked for.
"""
from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

CPU_BACKENDS = ("torch", "onnxruntime", "openvino")
GPU_BACKENDS = ("torch-cuda", "onnxruntime-cuda", "openvino-gpu")


class Unavailable(Exception):
    """The backend cannot run here (no GPU, package missing, wrong OS); the entry is skipped with the reason."""


def os_threads() -> int | None:
    try:
        import psutil

        return psutil.Process().num_threads()
    except Exception:  # noqa: BLE001
        return None


def random_input(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)


def top_ops(totals: dict[str, float], counts: dict[str, int], runs: int, top: int, unit_ms: float) -> list[dict]:
    """Rows ``{op, ms_per_run, share, calls_per_run}`` for the ``top`` op types by time."""
    grand = sum(totals.values()) or 1.0
    rows = []
    for op, total in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        rows.append({
            "op": op,
            "ms_per_run": round(total * unit_ms / runs, 4),
            "share": round(total / grand, 4),
            "calls_per_run": round(counts.get(op, 0) / runs, 2),
        })
    return rows


class Session:
    """One model loaded on one runtime, input in place."""

    backend = ""
    device = "cpu"
    timing = ""

    def __init__(self, spec: dict):
        self.spec = spec
        self.threads = int(spec["threads"])
        self.input_shape = list(spec["input_shape"])
        self.readback: dict = {}
        self.notes: list[str] = []
        self.call: Callable[[], object] = lambda: None

    def op_profile(self, runs: int, top: int) -> list[dict]:
        raise Unavailable(f"--op-profile is not available for {self.backend}")

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------------- torch


def _torch_model(spec: dict):
    import torch

    from ..factory import create_model
    from ..rewrites import rewrite as apply_rewrite

    torch.manual_seed(0)  # reproducible random weights when no checkpoint is given
    m = create_model(spec["model"], spec.get("checkpoint"), input_size=spec.get("input_size"))
    if spec.get("rewrite"):
        from .artifacts import TORCH_REWRITE_BACKEND

        m = apply_rewrite(m, TORCH_REWRITE_BACKEND, batch_size=spec.get("batch_size", 1))
    return m


class TorchSession(Session):
    backend = "torch"

    def __init__(self, spec: dict):
        super().__init__(spec)
        import torch

        self.torch = torch
        torch.set_num_threads(self.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set once in this process
            pass
        before = os_threads()
        t0 = time.perf_counter()
        self.model = _torch_model(spec)
        self.rewrites = list(getattr(self.model, "hvit_rewrites", []))
        self.input_shape = [spec.get("batch_size", 1), *self.model.hvit_input_size]
        self.load_s = time.perf_counter() - t0
        self._mode = torch.inference_mode()
        self._mode.__enter__()
        self.x = torch.from_numpy(random_input(self.input_shape)).to(self._device())
        self.model.to(self._device())
        self._make_call()
        self.readback = {
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "parallel_backend": _torch_parallel_backend(torch),
            "os_threads_before_load": before,
        }
        self.timing = "wall clock (perf_counter_ns) around model(x) under torch.inference_mode(); input prepared before timing"

    def _device(self) -> str:
        return "cpu"

    def _make_call(self):
        model, x = self.model, self.x
        self.call = lambda: model(x)

    def op_profile(self, runs: int, top: int) -> list[dict]:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device != "cpu" else [])
        for _ in range(3):
            self.call()
        with profile(activities=acts) as prof:
            for _ in range(runs):
                self.call()
        totals, counts = {}, {}
        for ev in prof.key_averages():
            t = _device_time(ev) if self.device != "cpu" else ev.self_cpu_time_total
            if t > 0:
                totals[ev.key] = totals.get(ev.key, 0.0) + t
                counts[ev.key] = counts.get(ev.key, 0) + ev.count
        return top_ops(totals, counts, runs, top, unit_ms=1e-3)  # µs → ms

    def close(self) -> None:
        try:
            self._mode.__exit__(None, None, None)
        except Exception:  # noqa: BLE001
            pass


def _device_time(ev) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        v = getattr(ev, name, None)
        if v is not None:
            return float(v)
    return 0.0


def _torch_parallel_backend(torch) -> str | None:
    try:
        for line in torch.__config__.parallel_info().splitlines():
            if line.startswith("ATen parallel backend"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001
        pass
    return None


class TorchCudaSession(TorchSession):
    backend = "torch-cuda"

    @staticmethod
    def check() -> None:
        import torch

        if not torch.cuda.is_available():
            raise Unavailable("no CUDA device here (torch.cuda.is_available() is False)")

    def __init__(self, spec: dict):
        self.check()
        super().__init__(spec)
        torch = self.torch
        self.device = f"cuda:{torch.cuda.current_device()}"
        self.readback["device_name"] = torch.cuda.get_device_name()
        self.readback["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
        torch.cuda.synchronize()
        self.timing = ("wall clock around model(x) + torch.cuda.synchronize(); input copied to the GPU before "
                       "timing, output left on the GPU")

    def _device(self) -> str:
        return "cuda"

    def _make_call(self):
        model, x, sync = self.model, self.x, self.torch.cuda.synchronize

        def call():
            model(x)
            sync()

        self.call = call


# ----------------------------------------------------------------------------------------------- onnxruntime


class OrtSession(Session):
    backend = "onnxruntime"
    provider = "CPUExecutionProvider"
    ort_device = "cpu"  # where the input and output buffers live

    def _options(self, profiling: bool = False, prefix: str | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if profiling:
            so.enable_profiling = True
            so.profile_file_prefix = prefix
        return so

    def _providers(self):
        return [self.provider]

    def _session(self, **kw):
        import onnxruntime as ort

        return ort.InferenceSession(self.spec["artifact"], self._options(**kw), providers=self._providers())

    def __init__(self, spec: dict):
        super().__init__(spec)
        import onnxruntime as ort

        self.ort = ort
        before = os_threads()
        t0 = time.perf_counter()
        self.sess = self._session()
        self.load_s = time.perf_counter() - t0
        after = os_threads()
        used = self.sess.get_providers()
        if used[0] != self.provider:
            raise Unavailable(f"{self.provider} did not start (session runs on {used[0]})")
        inp = self.sess.get_inputs()[0]
        shape = [d if isinstance(d, int) else s for d, s in zip(inp.shape, self.input_shape)]
        self.input_shape = shape
        self.x = random_input(shape)
        self.io = self._bind()
        run, io = self.sess.run_with_iobinding, self.io
        self.call = self._make_call(run, io)
        opts = self.sess.get_session_options()
        self.readback = {
            "intra_op_threads": opts.intra_op_num_threads,
            "inter_op_threads": opts.inter_op_num_threads,
            "execution_mode": str(opts.execution_mode).rsplit(".", 1)[-1],
            "graph_optimization_level": str(opts.graph_optimization_level).rsplit(".", 1)[-1],
            "providers": used,
            # ORT's intra-op pool adds threads - 1 OS threads (the caller is the last one): an independent check
            "os_threads_added_by_session": (after - before) if (after is not None and before is not None) else None,
        }
        self.timing = ("wall clock (perf_counter_ns) around InferenceSession.run_with_iobinding; input bound once "
                       "before timing (IO binding), outputs in pre-allocated buffers")

    def _bind(self):
        """Input bound once (on the device for GPU providers), outputs into buffers allocated once where their shape
        is static, so that the timed call does no copies or allocations of its own."""
        ort, dev, io = self.ort, self.ort_device, self.sess.io_binding()
        name = self.sess.get_inputs()[0].name
        if dev == "cpu":
            io.bind_cpu_input(name, self.x)
        else:
            self._xd = ort.OrtValue.ortvalue_from_numpy(self.x, dev, 0)
            io.bind_ortvalue_input(name, self._xd)
        self._outs = []
        for o in self.sess.get_outputs():
            if all(isinstance(d, int) for d in o.shape):
                buf = ort.OrtValue.ortvalue_from_shape_and_type(o.shape, np.float32, dev, 0)
                self._outs.append(buf)
                io.bind_ortvalue_output(o.name, buf)
            else:
                io.bind_output(o.name, dev, 0)
        return io

    def _make_call(self, run, io):
        return lambda: run(io)

    def op_profile(self, runs: int, top: int) -> list[dict]:
        warm = 3
        with tempfile.TemporaryDirectory(prefix="hvit-ortprof-") as tmp:
            sess = self._session(profiling=True, prefix=os.path.join(tmp, "ort"))
            feed = {sess.get_inputs()[0].name: self.x}
            for _ in range(warm + runs):
                sess.run(None, feed)
            path = sess.end_profiling()
            events = json.loads(Path(path).read_text())
        return aggregate_ort_profile(events, runs, top, skip_runs=warm)


def aggregate_ort_profile(events: list[dict], runs: int, top: int, skip_runs: int = 0) -> list[dict]:
    """Sum ONNX Runtime profiler kernel times by op type, ignoring the first ``skip_runs`` runs."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    t_from = starts[skip_runs] if len(starts) > skip_runs else 0
    totals: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.defaultdict(int)
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e.get("ts", 0) < t_from:
            continue
        op = (e.get("args") or {}).get("op_name", "?")
        totals[op] += float(e.get("dur", 0))
        counts[op] += 1
    return top_ops(totals, counts, runs, top, unit_ms=1e-3)


class OrtCudaSession(OrtSession):
    backend = "onnxruntime-cuda"
    provider = "CUDAExecutionProvider"
    ort_device = "cuda"

    @staticmethod
    def check() -> None:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if "CUDAExecutionProvider" not in have:
            raise Unavailable("onnxruntime-gpu is not installed here (providers: " + ", ".join(have) + ")")

    def __init__(self, spec: dict):
        self.check()
        super().__init__(spec)
        self.device = "cuda:0"
        self.timing = ("wall clock around run_with_iobinding + synchronize_outputs; input copied to the GPU before "
                       "timing (IO binding), output bound on the GPU")

    def _providers(self):
        return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]

    def _make_call(self, run, io):
        sync = io.synchronize_outputs

        def call():
            run(io)
            sync()

        return call


# -------------------------------------------------------------------------------------------------- openvino


class OvSession(Session):
    backend = "openvino"
    ov_device = "CPU"

    def _config(self, perf_count: bool = False) -> dict:
        # benchmark_app's -hint none -nstreams 1 -nthreads N, plus f32 inference (the exporter validated fp32;
        # CPUs with bf16/AMX would otherwise default to bf16)
        cfg = {"NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(self.threads), "INFERENCE_PRECISION_HINT": "f32"}
        if perf_count:
            cfg["PERF_COUNT"] = "YES"
        return cfg

    def check(self, core) -> None:
        if self.ov_device not in core.available_devices:
            raise Unavailable(f"OpenVINO has no {self.ov_device} device here (devices: "
                              + ", ".join(core.available_devices) + ")")

    def __init__(self, spec: dict):
        super().__init__(spec)
        import openvino as ov

        self.ov = ov
        self.core = ov.Core()
        self.check(self.core)
        before = os_threads()
        t0 = time.perf_counter()
        self.model = self.core.read_model(spec["artifact"])
        self.reshaped = False
        if self.model.input(0).get_partial_shape().is_dynamic:  # time the static shape, as exported
            self.model.reshape({self.model.input(0): self.ov.PartialShape(self.input_shape)})
            self.reshaped = True
        self.compiled = self.core.compile_model(self.model, self.ov_device, self._config())
        self.load_s = time.perf_counter() - t0
        self.req = self.compiled.create_infer_request()
        shape = list(self.compiled.input(0).get_partial_shape().get_min_shape())
        if any(d == 0 for d in shape):
            shape = self.input_shape
        self.input_shape = [int(d) for d in shape]
        self.x = random_input(self.input_shape)
        self._set_input()
        req = self.req
        self.call = req.infer
        self.readback = {"os_threads_before_load": before}
        if self.reshaped:
            self.notes.append(f"the IR has a dynamic input; reshaped to {self.input_shape} before compiling")
        for key in ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT",
                    "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "SCHEDULING_CORE_TYPE", "EXECUTION_DEVICES"):
            try:
                self.readback[key] = _plain(self.compiled.get_property(key))
            except Exception:  # noqa: BLE001 - property not supported by this plugin
                pass
        try:
            self.readback["device_name"] = self.core.get_property(self.ov_device, "FULL_DEVICE_NAME")
        except Exception:  # noqa: BLE001
            pass
        self.timing = ("wall clock (perf_counter_ns) around InferRequest.infer() (synchronous); input tensor set "
                       "once before timing, as benchmark_app does")

    def _set_input(self) -> None:
        self.req.set_input_tensor(self.ov.Tensor(self.x))

    def op_profile(self, runs: int, top: int) -> list[dict]:
        compiled = self.core.compile_model(self.model, self.ov_device, self._config(perf_count=True))
        req = compiled.create_infer_request()
        req.set_input_tensor(self.ov.Tensor(self.x))
        for _ in range(3):
            req.infer()
        totals: dict[str, float] = collections.defaultdict(float)
        counts: dict[str, int] = collections.defaultdict(int)
        for _ in range(runs):
            req.infer()
            for info in req.get_profiling_info():
                if str(info.status).endswith("EXECUTED") and "NOT" not in str(info.status):
                    t = info.real_time.total_seconds() * 1e6  # µs
                    totals[info.node_type] += t
                    counts[info.node_type] += 1
        return top_ops(totals, counts, runs, top, unit_ms=1e-3)


def _plain(v):
    """An OpenVINO property value as JSON: numbers and flags as they are, types as 'f32', enums by name."""
    if isinstance(v, (int, float, bool, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "get_type_name"):
        return v.get_type_name()
    return str(v).rsplit(".", 1)[-1]


class OvGpuSession(OvSession):
    backend = "openvino-gpu"
    ov_device = "GPU"

    def _config(self, perf_count: bool = False) -> dict:
        cfg = {"NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}  # the GPU plugin defaults to f16
        if perf_count:
            cfg["PERF_COUNT"] = "YES"
        return cfg

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.device = "GPU"
        where = "in device memory (remote tensor)" if self._remote else "in host memory; the plugin copies it"
        self.timing = (f"wall clock around InferRequest.infer() (synchronous: returns after the GPU finished); "
                       f"input set once before timing, {where}")

    def _set_input(self) -> None:
        self._remote = False
        try:  # a device-side input tensor keeps the host→device copy out of the timed call
            ctx = self.compiled.get_context()
            rt = ctx.create_tensor(self.ov.Type.f32, self.ov.Shape(self.input_shape), {})
            rt.copy_from(self.ov.Tensor(self.x))
            self.req.set_input_tensor(rt)
            self._rt = rt
            self._remote = True
        except Exception:  # noqa: BLE001 - older OpenVINO or a plugin without remote tensors
            self.req.set_input_tensor(self.ov.Tensor(self.x))


# ---------------------------------------------------------------------------------------------------- coreml


class CoremlSession(Session):
    backend = "coreml"

    @staticmethod
    def check() -> None:
        if sys.platform != "darwin":
            raise Unavailable(f"Core ML runs on macOS only (this is {sys.platform})")
        try:
            import coremltools  # noqa: F401
        except ImportError as e:
            raise Unavailable(f"coremltools is not installed ({e})") from None

    def __init__(self, spec: dict):
        self.check()
        super().__init__(spec)
        import coremltools as ct

        t0 = time.perf_counter()
        self.model = ct.models.MLModel(spec["artifact"], compute_units=ct.ComputeUnit.ALL)
        self.load_s = time.perf_counter() - t0
        desc = self.model.get_spec().description
        name = desc.input[0].name
        self.x = random_input(self.input_shape)
        feed = {name: self.x}
        predict = self.model.predict
        self.call = lambda: predict(feed)
        self.device = "ALL (Core ML chooses CPU/GPU/ANE)"
        self.readback = {"threads": "not controllable: Core ML schedules its own threads",
                         "compute_units": "ALL"}
        self.notes.append("--threads does not apply to Core ML")
        self.timing = ("wall clock around MLModel.predict(); the Python API converts the numpy input on every "
                       "call, so that copy is inside the timed region")


SESSIONS: dict[str, type[Session]] = {
    "torch": TorchSession,
    "torch-cuda": TorchCudaSession,
    "onnxruntime": OrtSession,
    "onnxruntime-cuda": OrtCudaSession,
    "openvino": OvSession,
    "openvino-gpu": OvGpuSession,
    "coreml": CoremlSession,
}


_PACKAGES = {"torch": "torch", "torch-cuda": "torch", "onnxruntime": "onnxruntime",
             "onnxruntime-cuda": "onnxruntime", "openvino": "openvino", "openvino-gpu": "openvino",
             "coreml": "coremltools"}


def quick_check(backend: str) -> tuple[bool, str | None]:
    """(decided, reason) without importing any runtime: CPU backends need only their package; GPU backends
    and Core ML on macOS stay undecided (``check_available`` in a probe process settles them)."""
    import importlib.util

    if backend not in _PACKAGES:
        return True, f"unknown backend {backend!r}"
    if backend == "coreml" and sys.platform != "darwin":
        return True, f"Core ML runs on macOS only (this is {sys.platform})"
    if importlib.util.find_spec(_PACKAGES[backend]) is None:
        return True, f"{_PACKAGES[backend]} is not installed"
    if backend in CPU_BACKENDS:
        return True, None
    return False, None


def check_available(backend: str) -> str | None:
    """None when ``backend`` can run here, else the reason it cannot (imports only that runtime)."""
    try:
        if backend == "torch-cuda":
            TorchCudaSession.check()
        elif backend == "onnxruntime-cuda":
            OrtCudaSession.check()
        elif backend == "openvino-gpu":
            import openvino as ov

            devices = ov.Core().available_devices
            if "GPU" not in devices:
                return "OpenVINO has no GPU device here (devices: " + ", ".join(devices) + ")"
        elif backend == "coreml":
            CoremlSession.check()
        elif backend in CPU_BACKENDS:
            import importlib

            importlib.import_module(_PACKAGES[backend])
        else:
            return f"unknown backend {backend!r}"
    except Unavailable as e:
        return str(e)
    except ImportError as e:
        return f"{backend} is not installed ({e})"
    return None


def load(backend: str, spec: dict) -> Session:
    return SESSIONS[backend](spec)
