"""The runtime registry: what runs an artifact (or the PyTorch module), configured in exactly one place.

A **format** (``onnx``, ``openvino``, ``coreml``) is what an exporter writes; a **runtime** (``onnxruntime``,
``openvino``, ``torch-cuda``, ...) is what runs it. Each runtime is one class in one module of this package,
registered with :func:`register_runtime`, in the spirit of timm's model registry and MMDeploy's backend
managers. The class carries everything anyone needs to know about that runtime:

* its name, aliases, the artifact format it runs (``None``: the PyTorch module itself), its device kind and
  the Python package it needs (:attr:`Runtime.package`, whose version results files record);
* an availability probe: :meth:`Runtime.quick_check` (no runtime import, for the coordinator) and
  :meth:`Runtime.check` (imports the runtime; raises :class:`Unavailable` with the reason);
* the session setup (threads, precision, one stream, sequential), in ``__init__``; the one timed call
  (:attr:`Runtime.call`, after :meth:`Runtime.prepare`); what the runtime reports back about its settings
  (:attr:`Runtime.readback`, checked by :meth:`Runtime.thread_notes`); operator profiling
  (:meth:`Runtime.op_profile`); and plain inference for validation (:meth:`Runtime.predict`).

Export validation, ``hvit-bench`` and the scripts in ``benchmarks/`` all open sessions through
:func:`open_runtime`, so a runtime is set up the same way wherever it is used. The rules every runtime keeps:

* CPU runtimes use ``threads`` intra-op threads (0: the runtime's own default), one stream, sequential
  execution, fp32 arithmetic unless asked otherwise; what the runtime reports back is recorded.
* GPU runtimes copy the input to the device before timing and end each timed call with a device
  synchronisation, so a run is not counted before it has finished; outputs stay on the device.
* ``op_profile`` runs extra, separately compiled sessions after the timed runs (profiling slows a runtime
  down, so it never overlaps the measurement).

Runtime modules import their runtime lazily (inside methods), so loading the registry imports none of them.
Adding a runtime is one new module in this package (found and imported when the registry is first read).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from importlib import metadata
from typing import Any, Callable, ClassVar, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import HvitError
from ..utils.registry import Registry


class Unavailable(Exception):
    """The runtime cannot run here (no GPU, package missing, wrong OS); the entry is skipped with the reason."""


class UnknownRuntimeError(HvitError, LookupError):
    pass


def os_threads() -> int | None:
    try:
        import psutil

        return psutil.Process().num_threads()
    except Exception:  # noqa: BLE001
        return None


def random_input(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)


class StaticBatchError(HvitError, RuntimeError):
    """The artifact was exported for another batch than the one asked for (a static batch axis)."""


def check_batch(artifact_shape, wanted) -> None:
    """Raise :class:`StaticBatchError` (one line) when the artifact's batch axis is a fixed size other than the
    batch asked for (``wanted``: the spec's ``input_shape``); a symbolic or unset axis takes any batch."""
    if not wanted or not artifact_shape:
        return
    have = artifact_shape[0]
    if isinstance(have, (int, np.integer)) and int(have) > 0 and int(have) != int(wanted[0]):
        raise StaticBatchError(f"the artifact takes batch {int(have)} only (a static batch axis), not {int(wanted[0])}: "
                               "time other batches with a dynamic-batch export (hvit-export --dynamic-batch)")


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


class RuntimeSpec(BaseModel):
    """What one runtime session loads: the typed ``spec`` of :class:`Runtime` (``open_runtime(name, spec)``).

    A plain dict is still accepted everywhere a spec is (it is validated into this model). Keys a runtime
    defines for itself (Core ML's ``compute_units``) are kept as extra fields (``spec.model_extra``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_version: int = 1
    threads: int = 0                          # 0: the runtime's own default
    artifact: Optional[str] = None            # the exported file (artifact runtimes)
    input_shape: Optional[list[int]] = None   # the shape to time (default: the artifact's own)
    # the torch runtimes build the module themselves
    model: Optional[str] = None
    rewrite: bool = False
    checkpoint: Optional[str] = None
    input_size: Optional[int] = None
    batch_size: int = 1
    compile_mode: Optional[str] = None        # torch.compile's mode (the torch-compile runtimes)
    # what the session is asked to compute in (None: fp32, or what the artifact itself asks for: an OpenVINO IR
    # with INFERENCE_PRECISION_HINT in its runtime_options); a runtime reports what it really used
    compute_precision: Optional[str] = None
    rewrite_format: Optional[str] = None      # whose recipe rewrites the torch module (default: ONNX's)
    # what hvit-bench adds (recorded, not read by the runtimes)
    backend: Optional[str] = None
    form: Optional[str] = Field(None, alias="variant")   # rewritten | original | int8 (JSON key: variant)

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):  # an explicit null means the default (old callers pass threads=None)
            data = {k: v for k, v in data.items() if v is not None or k not in ("threads", "batch_size", "rewrite")}
            if data.get("artifact") is not None:
                data["artifact"] = str(data["artifact"])
        return data

    def get(self, key: str, default=None):
        """The value of a field or an extra key (runtime-specific settings such as ``compute_units``)."""
        if key in type(self).model_fields:
            return getattr(self, key)
        return (self.model_extra or {}).get(key, default)


class Runtime:
    """One model loaded on one runtime.

    ``spec``: a :class:`RuntimeSpec` (or a dict of its fields): ``threads`` (0: the runtime's default),
    ``artifact`` (path of the exported file; artifact runtimes), ``input_shape`` (the shape to time; default the
    artifact's own), and for the torch runtimes ``model``, ``rewrite``, ``checkpoint``, ``input_size``,
    ``batch_size``.

    ``__init__`` loads the model (``load_s`` records how long); :meth:`prepare` places one input where the
    runtime reads it and sets :attr:`call`, the only thing inside the timed region.
    """

    # --- what the registry knows about the runtime (class attributes, read without instantiating) ---
    name: ClassVar[str] = ""
    format: ClassVar[str | None] = None       # the artifact format it runs; None: the PyTorch module itself
    device_kind: ClassVar[str] = "cpu"        # "cpu", "gpu" or "auto" (the runtime picks: Core ML)
    package: ClassVar[str] = ""               # the import / distribution name it needs
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # readback keys that must equal the --threads asked for (a note is recorded when they do not)
    thread_keys: ClassVar[tuple[str, ...]] = ()
    # availability is settled only by importing the runtime in a probe process (GPUs, Core ML on macOS)
    needs_probe: ClassVar[bool] = False
    # where it is listed (CLI help, docs, --list-backends): CPU runtimes first
    order: ClassVar[int] = 50
    # what a session computes in (fp32, bf16, fp16), apart from what the artifact holds; a runtime that learns
    # it from the runtime itself (OpenVINO's INFERENCE_PRECISION_HINT) sets the instance attribute after loading
    compute_precision: Optional[str] = "fp32"
    # the compute precisions a session may be asked for (RuntimeSpec.compute_precision), fp32 first
    compute_precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    # --- per session ---
    device: str = "cpu"
    timing: str = ""

    def __init__(self, spec: RuntimeSpec | dict):
        self.spec = spec if isinstance(spec, RuntimeSpec) else RuntimeSpec.model_validate(spec)
        self.threads = self.spec.threads
        self.input_shape = list(self.spec.input_shape) if self.spec.input_shape else None
        self.readback: dict = {}
        self.notes: list[str] = []
        self.load_s = 0.0
        self.call: Callable[[], object] = lambda: None
        asked = self.spec.compute_precision
        if asked is not None and asked not in self.compute_precisions:
            raise Unavailable(type(self).precision_unavailable(asked) or f"{self.name} has no {asked} compute path")

    # --- registry-level facts ------------------------------------------------------------------------------
    @classmethod
    def quick_check(cls) -> tuple[bool, str | None]:
        """(decided, reason) without importing the runtime: a missing package decides it; runtimes that
        ``needs_probe`` stay undecided until :meth:`check` runs in a probe process."""
        if importlib.util.find_spec(cls.package) is None:
            return True, f"{cls.package} is not installed"
        if cls.needs_probe:
            return False, None
        return True, None

    @classmethod
    def check(cls) -> None:
        """Raise :class:`Unavailable` with the reason when the runtime cannot run here (imports it)."""
        try:
            importlib.import_module(cls.package)
        except ImportError as e:
            raise Unavailable(f"{cls.package} is not installed ({e})") from None

    @classmethod
    def availability(cls) -> str | None:
        """None when the runtime can run here, else the reason it cannot."""
        try:
            cls.check()
        except Unavailable as e:
            return str(e)
        except ImportError as e:
            return f"{cls.name} is not installed ({e})"
        return None

    @classmethod
    def version(cls) -> str | None:
        try:
            return metadata.version(cls.package)
        except metadata.PackageNotFoundError:
            return None

    @classmethod
    def precision_unavailable(cls, precision: str | None) -> str | None:
        """None when a session may compute in ``precision`` here, else the one-line reason (an hvit-bench entry
        of that precision is skipped with it). BF16 on a CPU runtime also needs the CPU's own BF16 arithmetic:
        elsewhere it is emulated (torch) or silently computed in f32 (OpenVINO), so there is nothing to time."""
        if precision in (None, "fp32"):
            return None
        if precision not in cls.compute_precisions:
            return f"{cls.name} has no {precision} compute path"
        if precision == "bf16" and cls.device_kind == "cpu":
            from ..utils.cpu import BF16_FLAGS, has_bf16

            if not has_bf16():
                return (f"this CPU has no BF16 arithmetic (none of {', '.join(BF16_FLAGS)} among its flags), so "
                        f"{cls.name} would not compute in bf16 here")
        return None

    @classmethod
    def thread_notes(cls, threads: int, readback: dict) -> list[str]:
        """Notes when the runtime reports another thread count than the one asked for."""
        notes = []
        for key in cls.thread_keys:
            got = readback.get(key)
            if got is not None and int(got) != threads:
                notes.append(f"{cls.name} reports {key}={got}, not the {threads} asked for")
        return notes

    # --- a session -----------------------------------------------------------------------------------------
    def prepare(self, seed: int = 0) -> None:
        """Put one input (shape :attr:`input_shape`) in place and set :attr:`call`."""
        raise NotImplementedError

    def predict(self, inputs: list[np.ndarray], all_outputs: bool = False) -> list:
        """The first output for each input, as numpy, or (``all_outputs``) the tuple of every output
        (validation and evaluation)."""
        raise NotImplementedError(f"{self.name} does not run plain inference")

    def op_profile(self, runs: int, top: int) -> list[dict]:
        raise Unavailable(f"--op-profile is not available for {self.name}")

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------------- registry

RUNTIMES: Registry[type[Runtime]] = Registry("backend", discover=__package__, error=UnknownRuntimeError)


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: add a runtime to the registry under ``cls.name`` and its aliases (a new runtime is one
    module in this package holding one such class; the registry finds it by name)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    RUNTIMES.add(cls.name, cls, aliases=cls.aliases)
    return cls


def list_runtimes() -> list[type[Runtime]]:
    """Every registered runtime class, CPU runtimes first (each class's ``order``)."""
    return sorted(RUNTIMES.values(), key=lambda r: (r.order, r.name))


def runtime_names() -> tuple[str, ...]:
    """Every registered runtime, CPU runtimes first (each class's ``order``)."""
    return tuple(r.name for r in list_runtimes())


def gpu_runtimes() -> tuple[str, ...]:
    return tuple(r.name for r in list_runtimes() if r.device_kind == "gpu")


def runtimes_for_format(fmt: str | None) -> tuple[str, ...]:
    return tuple(r.name for r in list_runtimes() if r.format == fmt)


def canonical_runtime(name: str) -> str:
    """The registered name for ``name`` or an alias (``ort``, ``ov``, ``cuda``, ...); unknown names get a
    one-line error with close names."""
    return RUNTIMES.canonical(name)


def get_runtime(name: str) -> type[Runtime]:
    return RUNTIMES.get(name)


def open_runtime(name: str, spec: RuntimeSpec | dict) -> Runtime:
    """Load ``spec`` on runtime ``name`` (raises :class:`Unavailable` when it cannot run here)."""
    return get_runtime(name)(spec)


def run_artifact(name: str, artifact, inputs: list[np.ndarray], threads: int | None = None,
                 all_outputs: bool = False, **spec) -> list:
    """Run ``artifact`` on runtime ``name`` for each input and return the first output of each: the session
    set up exactly as ``hvit-bench`` sets it up (export validation and evaluation use this). ``spec`` adds
    runtime-specific keys (Core ML's ``compute_units``)."""
    rt = open_runtime(name, {"artifact": str(artifact), "threads": threads or 0, **spec})
    try:
        return rt.predict(inputs, all_outputs=all_outputs)
    finally:
        rt.close()


def timed_load(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def on_macos() -> bool:
    return sys.platform == "darwin"
