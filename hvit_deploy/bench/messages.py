"""The typed messages between the ``hvit-bench`` coordinator and its worker processes (JSON lines).

Commands (coordinator → worker) are a union discriminated by ``cmd``; replies (worker → coordinator) a union
discriminated by ``event``. The JSON on the wire is what protocol 1 always carried (``--against`` runs a worker
of another checkout, which must understand this one's commands and be understood back), so a field is only ever
added; unknown fields from another checkout are kept (``extra="allow"``).

:func:`parse_reply` / :func:`parse_command` read one decoded line; ``msg.to_wire()`` writes one.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_serializer, model_validator

from ..runtimes.base import RuntimeSpec

MESSAGES_SCHEMA_VERSION = 1


class _Msg(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_wire(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ------------------------------------------------------------------------------------------------- commands


class HelloCmd(_Msg):
    cmd: Literal["hello"] = "hello"


class ProbeCmd(_Msg):
    cmd: Literal["probe"] = "probe"
    backends: list[str]


class ExportCmd(_Msg):
    """Export (or reuse) ``model`` for every request: ``[fmt, rewrite]`` or ``[fmt, rewrite, {options}]``, the
    options being the int8 ones and/or ``{"dynamic_batch": true}`` (the batch sweep's artifact above batch 1; a
    worker of an older checkout ignores it and exports the static batch, which its runtime then times at the
    artifact's own batch: the entry's ``input_shape`` says so and ``compare`` refuses the pair). The batch each
    entry times travels in :class:`SetupCmd`'s spec (``batch_size``, ``input_shape``)."""

    cmd: Literal["export"] = "export"
    model: str
    requests: list[list]
    input_size: Optional[int] = None
    checkpoint: Optional[str] = None
    batch_size: int = 1
    precision: str = "fp32"


class WarmupConfig(_Msg):
    min_runs: int
    window: int
    tolerance: float
    max_runs: int
    max_seconds: float
    round_runs: int = 0


class SetupCmd(_Msg):
    """Load ``spec`` (and, paired, ``artifact_b`` on the same runtime), first inference, warm-up. On the wire
    ``warmup`` and ``artifact_b`` travel inside ``spec``, as protocol 1 has them."""

    cmd: Literal["setup"] = "setup"
    spec: RuntimeSpec
    warmup: WarmupConfig
    artifact_b: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("spec"), dict) and "warmup" not in data:
            spec = dict(data["spec"])
            data = {**data, "warmup": spec.pop("warmup", None), "artifact_b": spec.pop("artifact_b", None),
                    "spec": spec}
        return data

    @model_serializer(mode="plain")
    def _to_wire(self) -> dict:
        spec = self.spec.model_dump(mode="json", by_alias=True)
        spec["warmup"] = self.warmup.model_dump(mode="json")
        if self.artifact_b:
            spec["artifact_b"] = self.artifact_b
        return {"cmd": self.cmd, "spec": spec}


class RunCmd(_Msg):
    cmd: Literal["run"] = "run"
    n: int
    warm: int = 0


class RunPairCmd(_Msg):
    cmd: Literal["run_pair"] = "run_pair"
    blocks: int
    block: int
    warm: int = 0
    start_with_b: bool = False


class OpProfileCmd(_Msg):
    cmd: Literal["op_profile"] = "op_profile"
    runs: int
    top: int


class QuitCmd(_Msg):
    cmd: Literal["quit"] = "quit"


class GateCmd(_Msg):
    """Before a compute-precision entry (bf16) is timed: open ``spec`` (``compute_precision`` set) in this
    process, run held-out images (``eval_data``, else the split of ``calibration``, else the shipped photos) and
    judge them against eager FP32 with the INT8 gate (:func:`hvit_deploy.quantize.compute.compute_gate`). Sent
    to this checkout's workers only (like ``run_pair``)."""

    cmd: Literal["gate"] = "gate"
    spec: RuntimeSpec
    eval_data: Optional[str] = None
    calibration: Optional[str] = None


Command = Annotated[Union[HelloCmd, ProbeCmd, ExportCmd, SetupCmd, RunCmd, RunPairCmd, OpProfileCmd, GateCmd,
                          QuitCmd],
                    Field(discriminator="cmd")]

# --------------------------------------------------------------------------------------------------- replies


class Hello(_Msg):
    event: Literal["hello"] = "hello"
    protocol: Optional[int] = None
    package: str = ""
    version: Optional[str] = None


class Probed(_Msg):
    event: Literal["probe"] = "probe"
    available: dict[str, Optional[str]]      # runtime -> None (can run) or why not


class ExportResult(_Msg):
    ok: bool
    info: Optional[dict] = None              # the artifact's bench-artifact.json
    error: Optional[str] = None


class Exported(_Msg):
    event: Literal["exported"] = "exported"
    results: list[ExportResult]


class Progress(_Msg):
    event: Literal["progress"] = "progress"
    done: int


class Warming(_Msg):
    event: Literal["warming"] = "warming"
    runs: int


class Loaded(_Msg):
    event: Literal["loaded"] = "loaded"
    load_ms: float
    first_inference_ms: float


class WarmupReport(_Msg):
    runs: int
    settled: bool
    seconds: float
    window_medians_ms: list[float] = Field(default_factory=list)
    not_settled_because: Optional[str] = None


class PartnerLoad(_Msg):
    """The paired design: what the second artifact, loaded in the same worker, reported."""

    load_ms: float
    first_inference_ms: float
    readback: dict = Field(default_factory=dict)
    input_shape: Optional[list[int]] = None
    notes: list[str] = Field(default_factory=list)
    compute_precision: Optional[str] = None


class Ready(_Msg):
    event: Literal["ready"] = "ready"
    load_ms: float
    first_inference_ms: float
    warmup: WarmupReport
    readback: dict = Field(default_factory=dict)
    device: Optional[str] = None
    timing: Optional[str] = None
    input_shape: Optional[list[int]] = None
    notes: list[str] = Field(default_factory=list)
    rewrites: Optional[list] = None
    pid: Optional[int] = None
    compute_precision: Optional[str] = None  # absent from an older checkout's worker
    partner: Optional[PartnerLoad] = None


class Samples(_Msg):
    event: Literal["samples"] = "samples"
    ns: list[int]


class SamplesPair(_Msg):
    event: Literal["samples_pair"] = "samples_pair"
    a: list[int]
    b: list[int]


class OpProfiled(_Msg):
    event: Literal["op_profile"] = "op_profile"
    ops: list[dict]


class Gated(_Msg):
    """The compute-precision check: the record :func:`hvit_deploy.quantize.compute.compute_gate` returns."""

    event: Literal["gated"] = "gated"
    check: dict


class Skipped(_Msg):
    event: Literal["skipped"] = "skipped"
    reason: str


class Failed(_Msg):
    event: Literal["error"] = "error"
    error: str
    traceback: Optional[str] = None


Reply = Annotated[Union[Hello, Probed, Exported, Progress, Warming, Loaded, Ready, Samples, SamplesPair, OpProfiled,
                        Gated, Skipped, Failed], Field(discriminator="event")]

_COMMANDS: TypeAdapter = TypeAdapter(Command)
_REPLIES: TypeAdapter = TypeAdapter(Reply)


def parse_command(data: dict) -> Command:
    return _COMMANDS.validate_python(data)


def parse_reply(data: dict) -> Reply:
    """A reply as its typed message; a line that is not one (another checkout's worker gone astray) becomes a
    :class:`Failed` naming what arrived."""
    try:
        return _REPLIES.validate_python(data)
    except Exception as e:  # noqa: BLE001 - pydantic's ValidationError, or a non-dict
        first = " ".join(str(e).split())[:300]
        return Failed(error=f"unexpected answer {data.get('event') if isinstance(data, dict) else data!r}: {first}")


def describe(msg: Reply) -> str:
    """The one line a reply that is not the expected one gives as the reason."""
    if isinstance(msg, Failed):
        return msg.error
    if isinstance(msg, Skipped):
        return msg.reason
    return f"unexpected answer {msg.event!r}"
