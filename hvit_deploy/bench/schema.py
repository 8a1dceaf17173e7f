"""The typed records of an ``hvit-bench`` results file (``schema: hvit-bench/1``), in one place.

:class:`ResultsDoc` (the file) and :class:`ResultsEntry` (one measurement) are what the runner fills, what
:class:`.results.ResultsFile` writes and what :func:`.results.load_results` returns: ``compare``, the report, the
plot, the cluster code and the scripts read attributes, not keys. Fields a run writes are typed; what a runtime
or a newer hvit-bench adds of its own is kept as it is (``extra="allow"``), so files written by older and newer
versions load unchanged.

The JSON keys stay what scripts read: the form of an entry (rewritten, original, int8, bf16; ``entry.form`` in
code) is written as ``variant``, and an int8 or bf16 entry's FP32 form as ``fp32_variant``. ``schema_version`` counts changes
of the typed shape: 1 (no field) wrote ``precision`` for what the artifact holds; 2 writes
``artifact_precision`` and the ``compute_precision`` the runtime session used; 3 adds the batch sweep
(``hvit-bench --batch 1 2 4 ...``): every entry is one (model, runtime, form, batch), its ``batch_size`` part of
its key (:attr:`ResultsEntry.key`), its ``images_per_s`` the throughput of its median (``batch_size`` images
per ``median_ms``). An entry without ``batch_size`` (older files) is batch 1. Older files are migrated when
they load (:meth:`ResultsEntry._migrate`), never rewritten.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA = "hvit-bench/1"
READABLE = ("hvit-bench/1",)
SCHEMA_VERSION = 3
STATUSES = ("ok", "skipped", "error", "interrupted", "incomplete", "pending")
Status = Literal["ok", "skipped", "error", "interrupted", "incomplete", "pending"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> dict:
        """The JSON shape: the keys scripts read (``variant``, ``schema``); a field left out when it was never set
        and still holds its default (a list filled in place counts as set)."""
        fields = type(self).model_fields
        unset = {name for name, f in fields.items() if name not in self.model_fields_set
                 and getattr(self, name) == f.get_default(call_default_factory=True)}
        return self.model_dump(mode="json", by_alias=True, exclude=unset)

    def drop(self, *names: str) -> None:
        """Forget fields (back to their default, and left out of the file), as ``dict.pop`` did."""
        for name in names:
            if name in type(self).model_fields:
                setattr(self, name, type(self).model_fields[name].get_default(call_default_factory=True))
                self.__pydantic_fields_set__.discard(name)
            elif self.__pydantic_extra__ is not None:
                self.__pydantic_extra__.pop(name, None)


class ResultsEntry(_Record):
    """One (model, runtime, form, batch) measurement."""

    model: str
    backend: str                          # a runtime's name (hvit_deploy.runtimes)
    form: str = Field("rewritten", alias="variant")   # rewritten | original | int8 | bf16
    status: Status = "ok"
    threads: Optional[int] = None
    batch_size: Optional[int] = None      # images per timed call (the batch sweep); absent: 1
    artifact_precision: Optional[str] = None   # what the timed file holds: fp32, int8, w8 ...
    compute_precision: Optional[str] = None    # what the runtime session computed in: fp32, bf16, fp16
    iterations: int = 0
    rounds: Optional[int] = None
    processes: Optional[int] = None
    rounds_done: Optional[int] = None
    # how it was run (from the worker's ready message)
    device: Optional[str] = None
    input_shape: Optional[list[int]] = None
    timing: Optional[str] = None
    threads_readback: Optional[dict] = None
    load_ms: Optional[float] = None
    first_inference_ms: Optional[float] = None
    warmup: Optional[int] = None
    warmup_settled: Optional[bool] = None
    warmup_detail: Optional[dict] = None
    process_runs: list[dict] = Field(default_factory=list)
    artifact: Optional[dict] = None       # path, key, validation / gate figures, size (export manifest)
    rewrites: Optional[list] = None
    fp32_form: Optional[str] = Field(None, alias="fp32_variant")
    # a compute-precision entry (bf16): its accuracy gate against eager FP32 before timing (asked, read back,
    # figures, failures, held-out set: hvit_deploy.quantize.compute.compute_gate)
    precision_gate: Optional[dict] = None
    pairing_mode: Optional[dict] = None
    notes: list[str] = Field(default_factory=list)
    op_profile: Optional[list[dict]] = None
    worker_log: Optional[str] = None
    reason: Optional[str] = None          # why it was skipped
    error: Optional[str] = None           # why it failed
    # statistics of samples_ms (hvit_deploy.bench.stats.summarize) and same-run ratios
    mean_ms: Optional[float] = None
    median_ms: Optional[float] = None
    std_ms: Optional[float] = None
    min_ms: Optional[float] = None
    max_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    images_per_s: Optional[float] = None  # throughput at the median: batch_size * 1000 / median_ms
    median_ci_ms: Optional[list[float]] = None   # [lo, hi]
    ci_level: Optional[float] = None
    speedup_vs_torch: Optional[dict] = None
    speedup_vs_original: Optional[dict] = None
    speedup_vs_fp32: Optional[dict] = None
    # int8 entries: against the fastest non-INT8 form of the same runtime in the run (its FP32 form, or bf16 where
    # the CPU computes in it faster): what INT8 buys over the best the runtime does without it
    speedup_vs_best_float: Optional[dict] = None
    round_medians_ms: list[float] = Field(default_factory=list)
    round_process: Optional[list[int]] = None
    samples_ms: list[float] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """schema_version 1: ``precision`` was the artifact's precision."""
        if isinstance(data, dict) and "precision" in data and "artifact_precision" not in data:
            data = dict(data)
            data["artifact_precision"] = data.pop("precision")
        return data

    @field_validator("samples_ms")
    @classmethod
    def _finite(cls, v: list[float]) -> list[float]:
        if any(not math.isfinite(x) or x < 0 for x in v):
            raise ValueError("holds a negative, NaN or infinite latency")
        return v

    @model_validator(mode="after")
    def _ok_has_samples(self):
        if self.status == "ok" and not self.samples_ms:
            raise ValueError(f"({self.model}/{self.backend}) has no usable samples_ms")
        return self

    @property
    def batch(self) -> int:
        """The batch this entry timed (an older file's entry, without the field, timed batch 1)."""
        return self.batch_size or 1

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What matches an entry across files (``compare``) and within one (the speed-up ratios)."""
        return (self.model, self.backend, self.form, self.batch)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.backend}/{self.form}" + (f"/batch {self.batch}" if self.batch != 1 else "")

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.__pydantic_fields_set__.add("notes")

    def why(self) -> str:
        return self.reason or self.error or ""


Entry = ResultsEntry  # the name before schema_version 2


class ResultsDoc(_Record):
    """A whole results file."""

    schema_: str = Field(SCHEMA, alias="schema")
    schema_version: int = SCHEMA_VERSION
    tool: str = "hvit-bench"
    created: Optional[str] = None
    finished: Optional[str] = None
    status: Optional[str] = None          # running | complete | interrupted
    command: Optional[str] = None
    profile: Optional[str] = None
    settings: dict = Field(default_factory=dict)
    environment: dict = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    pairing: Optional[dict] = None        # --against: the run id and side both files carry
    cluster: Optional[dict] = None        # --cluster: the target, node and address it ran on
    results: list[ResultsEntry]

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """A file of any readable version in the current shape (entries migrate themselves)."""
        if isinstance(data, dict):
            data = dict(data)
            data.setdefault("schema", SCHEMA)
            if int(data.get("schema_version") or 1) < SCHEMA_VERSION:
                data["schema_version"] = SCHEMA_VERSION
        return data

    @field_validator("schema_")
    @classmethod
    def _known(cls, v: str) -> str:
        if not str(v).startswith("hvit-bench/"):
            raise ValueError(f"schema {v!r} is not an hvit-bench results file")
        if v not in READABLE:
            raise ValueError(f"schema {v!r} is newer than this hvit-bench reads ({', '.join(READABLE)})")
        return v

    def to_json(self) -> dict:
        out = super().to_json()
        out["results"] = [e.to_json() for e in self.results]  # each entry keeps to its own set fields
        return out

    def ok_entries(self) -> list[ResultsEntry]:
        return [e for e in self.results if e.status == "ok" and e.samples_ms]

    def git_commit(self) -> str | None:
        return ((self.environment or {}).get("git") or {}).get("commit")


def check(doc: dict | ResultsDoc) -> ResultsDoc:
    """Validate ``doc`` (a dict, or a typed document checked again from its JSON shape); raises ``ValueError``
    with the first problem on one line (location first)."""
    if isinstance(doc, ResultsDoc):
        doc = doc.to_json()
    try:
        return ResultsDoc.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        loc = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in first.get("loc", ())).lstrip(".")
        msg = first.get("msg", "invalid").removeprefix("Value error, ")
        loc = loc.replace("schema_", "schema")
        if not loc:
            raise ValueError(msg) from None
        raise ValueError(f"{loc} {msg}" if msg.startswith("(") else f"{loc}: {msg}") from None


def as_doc(doc: dict | ResultsDoc) -> ResultsDoc:
    """A typed document from either shape (scripts may still hand a ``json.load``-ed dict)."""
    return doc if isinstance(doc, ResultsDoc) else check(doc)


def upgrade(doc: dict) -> dict:
    """A document of any readable version in the current JSON shape."""
    return check(doc).to_json()
