"""The typed shape of an ``hvit-bench`` results file (``schema: hvit-bench/1``), in one place.

:class:`ResultsDoc` and :class:`Entry` are what the writer (:class:`.results.ResultsFile`) checks a document
against before every write, and what :func:`.results.load_results` checks a file against before ``compare``,
the report or the plot read it. Fields a run always writes are typed; what a runtime adds of its own
(``threads_readback``, ``op_profile``, ``artifact``, ...) is kept as it is (``extra="allow"``), so files
written by older versions of hvit-bench load unchanged.

A change to the meaning or shape of a typed field bumps :data:`SCHEMA` (``hvit-bench/2``) and teaches
:func:`upgrade` to read the older version.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA = "hvit-bench/1"
READABLE = ("hvit-bench/1",)
STATUSES = ("ok", "skipped", "error", "interrupted", "incomplete", "pending")


class Entry(BaseModel):
    """One (model, backend, variant) measurement."""

    model_config = ConfigDict(extra="allow")

    model: str
    backend: str                          # a runtime's name (hvit_deploy.runtimes)
    variant: str = "rewritten"            # rewritten | original
    status: Literal["ok", "skipped", "error", "interrupted", "incomplete", "pending"] = "ok"
    threads: Optional[int] = None
    batch_size: Optional[int] = None
    precision: Optional[str] = None
    iterations: int = 0
    rounds: Optional[int] = None
    processes: Optional[int] = None
    samples_ms: list[float] = Field(default_factory=list)
    median_ms: Optional[float] = None
    median_ci_ms: Optional[tuple[float, float]] = None
    round_medians_ms: list[float] = Field(default_factory=list)
    round_process: Optional[list[int]] = None
    reason: Optional[str] = None          # why it was skipped
    error: Optional[str] = None           # why it failed

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


class ResultsDoc(BaseModel):
    """A whole results file."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_: str = Field(SCHEMA, alias="schema")
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
    results: list[Entry]

    @field_validator("schema_")
    @classmethod
    def _known(cls, v: str) -> str:
        if not str(v).startswith("hvit-bench/"):
            raise ValueError(f"schema {v!r} is not an hvit-bench results file")
        if v not in READABLE:
            raise ValueError(f"schema {v!r} is newer than this hvit-bench reads ({', '.join(READABLE)})")
        return v


def upgrade(doc: dict) -> dict:
    """A document of any readable version in the current shape (only hvit-bench/1 exists so far)."""
    doc.setdefault("schema", SCHEMA)
    return doc


def check(doc: dict) -> ResultsDoc:
    """Validate ``doc``; raises ``ValueError`` with the first problem on one line (location first)."""
    try:
        return ResultsDoc.model_validate(upgrade(doc))
    except ValidationError as e:
        first = e.errors()[0]
        loc = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in first.get("loc", ())).lstrip(".")
        msg = first.get("msg", "invalid").removeprefix("Value error, ")
        loc = loc.replace("schema_", "schema")
        if not loc:
            raise ValueError(msg) from None
        raise ValueError(f"{loc} {msg}" if msg.startswith("(") else f"{loc}: {msg}") from None
