"""Benchmark profiles: named protocols in ``profiles/*.yaml`` (papers' CPU protocol, GPU, CI).

A profile fixes every field of the timing protocol; command-line flags override single fields
(``hvit-bench --profile ci --iters 200``). Fields are checked when the file is loaded and a bad one is refused
with its location (``profiles/ci.yaml: warmup.min_runs: Input should be greater than or equal to 1; got 0``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..errors import ConfigError
from ..resources import profiles_dir
from ..runtimes import runtime_names
from ..utils.io import load_yaml, parse_strict

DEFAULT_PROFILE = "cpu-paper"

# The forms an entry is timed in (the profile's key and the CLI's flag say "variants"): rewritten: the recipe's
# export form (FP32); original: the model as written; int8: the rewritten form quantized to INT8 the way
# `hvit-export --precision int8` does it (calibration images needed for onnxruntime / openvino); bf16: the
# rewritten FP32 form computed in bfloat16 (OpenVINO: INFERENCE_PRECISION_HINT=bf16; torch: bfloat16 autocast),
# gated against eager FP32 before it is timed, skipped with the reason where the CPU or the runtime cannot
FORM_NAMES = ("rewritten", "original", "int8", "bf16")
COMPUTE_FORMS = ("bf16",)   # forms that change what a runtime computes in, not the artifact
MAX_BATCH = 4096  # the largest batch a sweep may ask for


def _known_runtime(name: str) -> str:
    names = runtime_names()
    if name not in names:
        raise ValueError(f"unknown backend {name!r}; registered runtimes: {', '.join(names)}")
    return name


# the profile's word is "backends" (as the CLI's --backends); each one names a registered runtime
Backend = Annotated[str, AfterValidator(_known_runtime)]
Form = Literal["rewritten", "original", "int8", "bf16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Warmup(_Strict):
    """Untimed runs before measuring: at least ``min_runs``, then windows of ``window`` runs until latency stops
    improving — a window's median no more than ``tolerance`` below the previous one's — or a cap is reached
    (the entry records which)."""

    min_runs: int = Field(50, ge=1, description="runs always done before the settle check")
    window: int = Field(20, ge=2, description="runs per settle-check window")
    tolerance: float = Field(0.03, gt=0, lt=1, description="improvement between window medians still counted as warming up")
    max_runs: int = Field(2000, ge=1, description="stop warming up after this many runs, settled or not")
    max_seconds: float = Field(60.0, gt=0, description="stop warming up after this long, settled or not")
    round_runs: int = Field(5, ge=0, description="untimed runs before each turn when entries take turns (rounds > 1)")

    @model_validator(mode="after")
    def _caps(self):
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs ({self.max_runs}) is below min_runs ({self.min_runs})")
        return self


class OpProfile(_Strict):
    enabled: bool = False
    runs: int = Field(50, ge=1, description="profiled runs (after the timed ones, in a separate session)")
    top: int = Field(15, ge=1, description="operator types listed")


class Profile(_Strict):
    name: str = ""
    description: str = ""
    models: list[str] = Field(default_factory=list, description="default models; empty = one per family")
    backends: list[Backend] = Field(default_factory=lambda: ["torch", "onnxruntime", "openvino"], min_length=1)
    variants: list[Form] = Field(default_factory=lambda: ["rewritten"], min_length=1)
    threads: int = Field(4, ge=1, le=1024, description="intra-op threads of every CPU runtime")
    iterations: int = Field(4000, ge=1, description="timed runs per entry")
    rounds: int = Field(1, ge=1, description="interleaved rounds: the entries of a model take turns, iterations/rounds runs each")
    processes: int = Field(1, ge=1, description="worker processes per entry, one after another, rounds shared out "
                           "among them (each loads and warms up anew), so process-to-process variation is measured")
    batch_size: Literal[1] = 1  # the batch of a run without a sweep (kept: older profile files name it)
    batch: list[Annotated[int, Field(ge=1, le=MAX_BATCH)]] = Field(
        default_factory=lambda: [1], min_length=1,
        description="batch sizes to time, each its own entry (the batch sweep, e.g. [1, 2, 4, 8, 16, 32, 64]); "
                    "runtimes of an artifact time a dynamic-batch export at batches other than 1")
    input_size: Optional[int] = Field(None, ge=16, description="square input side; default: the model's own")
    precision: Literal["fp32"] = "fp32"
    calibration: Optional[str] = Field(None, description="folder of calibration images for the int8 variant "
                                       "(searched recursively; the gate's held-out images are split off it)")
    calibration_size: Optional[int] = Field(None, ge=1, description="calibration images used (default: the "
                                            "recipe's quantization.calibration_size)")
    eval_data: Optional[str] = Field(None, description="held-out images for the int8 and bf16 accuracy gates "
                                     "(default: split off the calibration folder; bf16 without one: the shipped "
                                     "photos)")
    warmup: Warmup = Warmup()
    op_profile: OpProfile = OpProfile()
    pair_block: int = Field(0, ge=0, description="with --against: a runtime that runs an artifact times base and "
                            "head in ONE worker process, alternating blocks of this many runs (ABBA); 0: each side "
                            "in its own process, rounds interleaved")
    ci_level: float = Field(0.95, gt=0.5, lt=1)
    timeout_s: float = Field(1800.0, gt=0, description="a worker silent for this long is stopped (export included)")
    source: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _rounds(self):
        if self.rounds > self.iterations:
            raise ValueError(f"rounds ({self.rounds}) exceeds iterations ({self.iterations})")
        if self.processes > self.rounds:
            raise ValueError(f"processes ({self.processes}) exceeds rounds ({self.rounds}); each process runs whole rounds")
        if len(set(self.backends)) != len(self.backends):
            raise ValueError("backends: listed twice")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("variants: listed twice")
        if len(set(self.batch)) != len(self.batch):
            raise ValueError("batch: a size listed twice")
        return self

    def settings(self) -> dict:
        """The protocol fields stored in a results file (what a comparison checks)."""
        return self.model_dump(exclude={"source", "description", "models"})


def list_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def parse_profile(data, source: str) -> Profile:
    return parse_strict(Profile, data, source, "a profile", empty_ok=True)


def load_profile(name_or_path: str | None = None) -> Profile:
    """A shipped profile by name (``ci``) or any YAML file by path."""
    name_or_path = name_or_path or DEFAULT_PROFILE
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        path = p
    else:
        path = profiles_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(list_profiles()) or "none"
            raise ConfigError(f"unknown profile {name_or_path!r}; shipped profiles: {known}")
    data = load_yaml(path)
    prof = parse_profile(data, str(path))
    if not prof.name:
        prof.name = path.stem
    return prof


def override(profile: Profile, **fields) -> Profile:
    """A copy of ``profile`` with the non-None ``fields`` replaced (dotted names like ``warmup.min_runs``),
    validated again so a bad flag value gets the same one-line message as a bad YAML field."""
    data = profile.model_dump(exclude={"source"})
    changed = False
    for key, value in fields.items():
        if value is None:
            continue
        changed = True
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    if not changed:
        return profile
    return parse_profile(data, f"{profile.source or profile.name} (with command-line overrides)")
