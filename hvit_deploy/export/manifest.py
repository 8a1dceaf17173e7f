"""``DIR/manifest.json``: one entry per artifact, updated in place (atomically) by every export into DIR.

Typed records (pydantic v2, ``schema_version`` 2):

* :class:`ManifestEntry`: one export, an artifact (``status: "ok"``) or a failure (``"failed"``, with ``error``).
  Built in one place, :meth:`hvit_deploy.export.pipeline.ExportSession._entry`, for FP32 exports and for the
  artifacts of the precision stage alike. Two precisions are named apart: ``artifact_precision`` is what the file
  holds (``fp32``, ``fp16``, ``int8``, ``w8``: 8-bit weights with float activations, ``w4``: 4-bit palettized
  weights) and ``compute_precision`` what the runtime session that validated it computes in (``fp32`` for ONNX
  Runtime's CPU provider and for OpenVINO compiled with ``INFERENCE_PRECISION_HINT=f32``; for Core ML the
  precision the program was converted for; for ``--precision bf16`` on OpenVINO, ``artifact_precision: fp32``
  and the ``compute_precision`` the validating session read back: ``bf16`` on a CPU with BF16, else what it
  computed in, with a note). ``precision`` keeps the ``--precision`` word that was asked for, for
  readers of older manifests.
* :class:`FailedEntry`: a failure that may have no session behind it (a model that did not build, a checkpoint
  not found): model, format, error, and whether the rewritten form was asked for.
* :class:`Manifest`: the file: ``tool``, ``updated``, ``tools``, ``artifacts``, ``failures`` and, after
  ``--precision auto``, ``ladders`` (:class:`~hvit_deploy.export.ladder.Ladder`: every precision measured per
  model and format, and the pick; absent from older manifests, which load with none).

A manifest written before schema 2 (no ``schema_version``, ``precision`` only) loads: ``precision`` becomes
``artifact_precision`` (Core ML's ``int8``, weight-only, becomes ``w8``). Keys this module does not know are kept
as they are (e.g. ``cluster``, OpenVINO's ``bin_sha256``).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError
from ..utils.io import atomic_write_json, pydantic_error_message
from ..versions import tool_versions
from .ladder import Ladder

MANIFEST = "manifest.json"
SCHEMA_VERSION = 2
ARTIFACT_PRECISIONS = ("fp32", "fp16", "int8", "w8", "w4")


def artifact_precision_of(fmt: str | None, precision: str | None) -> str | None:
    """What the file holds for a ``--precision``: Core ML's ``int8`` is 8-bit weights with float activations."""
    return "w8" if fmt == "coreml" and precision == "int8" else precision


class _Record(BaseModel):
    """Unknown keys are kept; a record read without ``schema_version`` is migrated (see the module docstring)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "artifact_precision" not in data and data.get("precision") is not None:
            data["artifact_precision"] = artifact_precision_of(data.get("format"), data["precision"])
        data.setdefault("schema_version", SCHEMA_VERSION)  # set, so that it is written
        return data

    def to_json(self) -> dict[str, Any]:
        """The JSON form (numpy scalars as they are: the writers convert them): the keys that were set, so a
        record keeps the shape it was built or read with."""
        return self.model_dump(exclude_unset=True)


class ManifestEntry(_Record):
    """One export into the folder (see the module docstring); the figures stay the exporter's and the gate's."""

    model: str
    format: str
    status: Literal["ok", "failed"]
    family: str | None = None
    path: str | None = None
    files: list[str] | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    input_name: str | None = None
    output_name: str | list[str] | None = None
    num_classes: int | None = None
    input_shape: list[int] | None = None
    output_shape: list[int] | list[list[int]] | None = None
    dynamic_batch: bool | None = None
    precision: str | None = None              # the --precision asked for (the pre-schema-2 key)
    artifact_precision: str | None = None     # what the file holds: fp32, fp16, int8, w8, w4
    compute_precision: str | None = None      # what the validating runtime session computes in
    rewritten: bool | None = None
    rewrites: list[str] = Field(default_factory=list)
    rewrite_counts: dict[str, Any] = Field(default_factory=dict)
    input_kind: str | None = None
    checkpoint: str | None = None
    labels: dict[str, Any] | None = None
    preprocessing: dict[str, Any] | None = None
    tools: dict[str, Any] | None = None
    seconds: float | None = None
    exporter: str | None = None
    opset: int | str | None = None
    validation: dict[str, Any] = Field(default_factory=dict)
    fp32_validation: dict[str, Any] | None = None   # a converted artifact: its FP32 source's validation
    quantization: dict[str, Any] | None = None      # calibration, quantizer settings, gate, fallback
    # a compute precision (bf16): the INT8 gate's check of the session that computed in it (asked, read back,
    # figures, failures, held-out set; hvit_deploy.quantize.compute.compute_gate)
    precision_gate: dict[str, Any] | None = None
    notes: list[str] | None = None                  # what a reader should know (e.g. no BF16 on this CPU)
    size_ratio_vs_fp32: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class FailedEntry(_Record):
    """A failed export, possibly before any session existed: what was asked and why it failed."""

    model: str
    format: str
    status: Literal["failed"] = "failed"
    error: str
    rewritten: bool | None = None


def failed_entry(model: str, formats: str | list[str], error: str, *, rewritten: bool | None = None) -> dict[str, Any]:
    """The manifest record of an export that produced nothing, built here only: a model whose checkpoint is
    missing or that did not build (``formats``: every format asked, comma-joined), or one export that failed
    (``rewritten`` set). The JSON form of a :class:`FailedEntry`."""
    fmt = formats if isinstance(formats, str) else ",".join(formats)
    kw = {"rewritten": rewritten} if rewritten is not None else {}
    return FailedEntry(model=model, format=fmt, status="failed", error=error, **kw).to_json()


def _entry(data: Any) -> ManifestEntry | FailedEntry:
    if isinstance(data, (ManifestEntry, FailedEntry)):
        return data
    if isinstance(data, dict) and data.get("status") != "ok" and "family" not in data:
        return FailedEntry.model_validate(data)
    return ManifestEntry.model_validate(data)


def _entry_or_none(data: Any) -> ManifestEntry | FailedEntry | None:
    try:
        return _entry(data) if isinstance(data, (dict, BaseModel)) else None
    except ValidationError:
        return None


class Manifest(_Record):
    tool: str = "hvit-deploy"
    updated: str | None = None
    tools: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[ManifestEntry] = Field(default_factory=list)
    failures: list[Union[ManifestEntry, FailedEntry]] = Field(default_factory=list)
    ladders: list[Ladder] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _entries(cls, data: Any) -> Any:
        """Entries that are not records (not an object, no model/format/status) are dropped, as before schema 2
        a manifest kept only objects; the others are typed."""
        if isinstance(data, dict):
            data = dict(data)
            for key in ("artifacts", "failures"):
                data[key] = [t for t in map(_entry_or_none, data.get(key) or []) if t is not None]
        return data


def load_manifest(path: str | Path) -> Manifest:
    """``DIR/manifest.json`` (or the file itself) as typed records; old manifests load (module docstring).
    A missing, unreadable or invalid file raises :class:`~hvit_deploy.errors.ConfigError` (one line)."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read manifest {p}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"manifest {p} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"manifest {p} is not a JSON object")
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        raise ConfigError(pydantic_error_message(str(p), e)) from None


def _key(e: ManifestEntry | FailedEntry) -> tuple:
    d = e.to_json()
    return (d.get("model"), d.get("format"), d.get("path") or d.get("artifact_precision"),
            tuple(d.get("input_shape") or ()), bool(d.get("rewritten")))


def _same_export(a: ManifestEntry | FailedEntry, b: ManifestEntry | FailedEntry) -> bool:
    return (a.model, a.format, getattr(a, "rewritten", None)) == (b.model, b.format, getattr(b, "rewritten", None))


def update_manifest(out_dir: str | Path, entries: list[dict | ManifestEntry | FailedEntry],
                    ladders: list[Ladder] | None = None) -> Path:
    """Merge ``entries`` into the manifest: artifacts go to ``artifacts`` (replacing older entries for the same
    file), failures to ``failures``; a failure is dropped once the same export succeeds. A broken manifest is
    rebuilt from what this run writes; entries in it that are not records are dropped. ``ladders`` replace the
    ones of the same model, runtime, format and thread count."""
    path = Path(out_dir) / MANIFEST
    manifest = Manifest()
    if path.exists():
        try:
            manifest = load_manifest(path)
        except ConfigError:
            pass  # a broken manifest is rebuilt from what this run wrote
    for e in map(_entry, entries):
        if e.status == "ok":
            manifest.artifacts = [a for a in manifest.artifacts if a.path != e.path] + [e]
            manifest.failures = [f for f in manifest.failures if not _same_export(f, e)]
        else:
            manifest.failures = [f for f in manifest.failures if _key(f) != _key(e)] + [e]
    for lad in ladders or []:
        manifest.ladders = [x for x in manifest.ladders if x.key != lad.key] + [lad]
    manifest.updated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    manifest.tools = tool_versions()
    return atomic_write_json(path, {"schema_version": SCHEMA_VERSION, "tool": manifest.tool,
                                    "updated": manifest.updated, "tools": manifest.tools,
                                    "artifacts": [a.to_json() for a in manifest.artifacts],
                                    "failures": [f.to_json() for f in manifest.failures],
                                    **({"ladders": [x.to_json() for x in manifest.ladders]} if manifest.ladders
                                       else {}),
                                    **(manifest.model_extra or {})})
