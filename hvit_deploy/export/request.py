"""One export request, one planner: what ``hvit-export`` (or a Python caller) asks for, checked once, and the jobs
it turns into.

:class:`ExportRequest` is built once, from the command line (``hvit_deploy.cli.export``) or from Python
(``ExportRequest(models=["smt_t"], formats=["onnx", "openvino"])``); building it runs every check of the
request's flags (one line each, before anything is built or written). :func:`plan` turns it into
:class:`ModelPlan` s, one per model, each holding its :class:`ExportTask` s, the jobs (model x format x form) in the order
a run records them. A local run (:func:`hvit_deploy.export.run.run_local`) and a ``--cluster`` run
(:mod:`hvit_deploy.cluster.export`) execute the same plan, building each session the same way
(:func:`hvit_deploy.export.run.build_session`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import HvitError
from ..registry import canonical_name, get_spec, list_families, list_models
from .manifest import failed_entry  # noqa: F401  (the one builder of a failed record; callers import it from here too)

Form = Literal["rewritten", "original"]
QUANTIZED = ("int8", "w4")  # the precisions the precision stage (hvit_deploy.quantize) makes by quantizing
COMPUTED = ("bf16",)        # ... and by asking the runtime to compute in them (hvit_deploy.quantize.compute)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".safetensors")


def internal_error(e: BaseException) -> str:
    """One line for a bug in one export (it must not sink the others)."""
    return f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"


def check_input_options(*, batch: int | None, dynamic_batch: bool, image_input: bool, features: bool,
                        labels: bool) -> None:
    """The checks shared by a request and a session built directly (one line each)."""
    if batch is not None and batch < 1:
        raise HvitError("--batch must be at least 1")
    if dynamic_batch and batch not in (None, 1):
        raise HvitError("--dynamic-batch takes any batch size; leave out --batch")
    if image_input and (dynamic_batch or batch not in (None, 1)):
        raise HvitError("--image-input takes one image: leave out --batch and --dynamic-batch")
    if features and (labels or image_input):
        raise HvitError("--features exports the stage maps: --labels and --image-input do not apply")


class ExportTask(BaseModel):
    """One export: a model to a format, rewritten or as written."""

    model_config = ConfigDict(frozen=True)

    model: str
    format: str
    form: Form = "rewritten"
    checkpoint: str | None = None

    @property
    def rewritten(self) -> bool:
        return self.form == "rewritten"

    @property
    def label(self) -> str:
        return f"{self.model} -> {self.format}{'' if self.rewritten else ' (as written)'}"


class ModelPlan(BaseModel):
    """One model's exports, built from one session; ``error``: it cannot be built (no checkpoint found)."""

    model: str
    checkpoint: str | None = None
    error: str | None = None
    jobs: list[ExportTask] = Field(default_factory=list)


class ExportRequest(BaseModel):
    """What to export and how; validated when built (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    models: list[str] = Field(default_factory=list)
    families: list[str] = Field(default_factory=list)
    formats: list[str] = Field(default_factory=lambda: ["onnx"])
    forms: list[Form] = Field(default_factory=lambda: ["rewritten"])
    precision: Literal["fp32", "fp16", "int8", "w4", "bf16", "auto"] | None = None
    input_size: int | tuple[int, int] | None = None
    batch: int | None = None
    dynamic_batch: bool = False
    checkpoint: str | None = None
    checkpoint_dir: str | None = None
    trust_checkpoint: bool = False
    use_ema: bool = False
    labels: str | None = None
    num_classes: int | None = None
    fold_normalize: bool = False
    image_input: bool = False
    features: bool = False
    calibration: str | None = None
    eval_data: str | None = None
    calibration_size: int | None = None
    fallback: bool = True
    recipe: str | None = None
    out: str = "exports"
    opset: int | None = None
    validate_artifacts: bool = True
    plugins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "ExportRequest":
        self.models = self._resolve_models()
        from ..formats import parse_formats

        self.formats = parse_formats(self.formats)
        self._check_checkpoints()
        check_input_options(batch=self.batch, dynamic_batch=self.dynamic_batch, image_input=self.image_input,
                            features=False, labels=False)
        if self.image_input and "coreml" not in self.formats:
            raise HvitError(f"--image-input applies to Core ML only, and --to asks for {', '.join(self.formats)}; "
                            f"use --fold-normalize for ONNX/OpenVINO pixel input")
        if self.num_classes is not None and self.num_classes < 0:
            raise HvitError(f"--num-classes must be 0 (no head: pooled features) or more, not {self.num_classes}")
        if self.features:
            self._check_features()
        if self.labels is not None:
            from ..labels import read_labels

            read_labels(self.labels)  # a missing, empty or malformed file is refused before anything is built
        if self.precision == "auto":
            self._check_auto()
        self._check_quantization()
        return self

    def _check_auto(self) -> None:
        """``--precision auto`` times batch-1 artifacts of the rewritten form on the formats' own runtimes."""
        from .ladder import runtime_of_format

        no_ladder = [f for f in self.formats if runtime_of_format(f) is None]
        if no_ladder:
            raise HvitError(f"--precision auto times each format's precisions on its runtime here; "
                            f"{', '.join(no_ladder)} has no ladder (use --precision fp16/int8/w4 there)")
        asked = [flag for flag, on in (("--no-rewrite/--both", self.forms != ["rewritten"]),
                                       ("--batch", self.batch not in (None, 1)),
                                       ("--dynamic-batch", self.dynamic_batch),
                                       ("--features", self.features), ("--fold-normalize", self.fold_normalize),
                                       ("--image-input", self.image_input),
                                       ("--input-size HxW", isinstance(self.input_size, tuple))) if on]
        if asked:
            raise HvitError(f"--precision auto times batch-1 artifacts of the rewritten model at a square input; "
                            f"leave out {', '.join(asked)}")

    def _resolve_models(self) -> list[str]:
        names = [canonical_name(n) for n in self.models]
        for fam in self.families:
            fam_models = list_models(fam)
            if not fam_models:
                raise HvitError(f"unknown family {fam!r}; families: {', '.join(list_families())}")
            names += fam_models
        names = list(dict.fromkeys(names))
        if not names:
            raise HvitError("name at least one model (or --family F); `hvit-export --list` shows the zoo")
        return names

    def _check_checkpoints(self) -> None:
        if self.checkpoint and len(self.models) != 1:
            raise HvitError("--checkpoint goes with exactly one model; use --checkpoint-dir for several")
        if self.checkpoint and not Path(self.checkpoint).is_file():
            raise HvitError(f"checkpoint not found: {self.checkpoint}")
        if self.checkpoint_dir and not Path(self.checkpoint_dir).is_dir():
            raise HvitError(f"checkpoint directory not found: {self.checkpoint_dir}")

    def _check_features(self) -> None:
        from .features import check_features

        check_input_options(batch=None, dynamic_batch=False, image_input=self.image_input, features=True,
                            labels=self.labels is not None)
        for n in self.models:  # refused before anything is built, one line
            spec = get_spec(n)
            size = self.input_size or spec.input_size[1:]
            check_features(spec, (spec.input_size[0],) + ((size, size) if isinstance(size, int) else tuple(size)))

    def _check_quantization(self) -> None:
        """The INT8 flags, checked before anything is built or written."""
        from ..quantize.calibration import CalibrationError, find_images, split_sets
        from ..quantize.stage import check_request

        if self.precision in COMPUTED:
            for fmt in self.formats:
                check_request(fmt, self.precision, self.calibration)
            if self.calibration_size is not None:
                raise HvitError("--calibration-size goes with --precision int8")
            if self.calibration or self.eval_data:  # the gate's held-out images: missing, empty, overlap
                split_sets(self.calibration, eval_data=self.eval_data, preprocess=None) if self.calibration else \
                    find_images(self.eval_data, "--eval-data")
            return
        if self.precision == "auto":
            if self.calibration:
                split_sets(self.calibration, eval_data=self.eval_data, preprocess=None)
            elif self.eval_data or self.calibration_size is not None:
                raise HvitError("--eval-data and --calibration-size go with --calibration")
            return
        if not self.quantized:
            for flag, value in (("--calibration", self.calibration), ("--eval-data", self.eval_data),
                                ("--calibration-size", self.calibration_size)):
                if value is not None:
                    raise HvitError(f"{flag} goes with --precision int8")
            return
        for fmt in self.formats:
            check_request(fmt, self.precision, self.calibration)
        if self.calibration_size is not None and self.calibration_size < 1:
            raise CalibrationError("--calibration-size must be at least 1")
        if self.calibration and any(f != "coreml" for f in self.formats):
            split_sets(self.calibration, eval_data=self.eval_data, preprocess=None)  # missing, empty, overlap
        elif self.eval_data:
            raise HvitError("--eval-data goes with --calibration (Core ML int8 is weight-only and is not run here)")

    # ------------------------------------------------------------------------------------------ derived
    @property
    def quantized(self) -> bool:
        return self.precision in QUANTIZED

    @property
    def converted(self) -> bool:
        """Made by the precision stage from the FP32 export (quantized, or a compute precision)."""
        return self.precision in QUANTIZED + COMPUTED

    def notes(self) -> list[str]:
        """What the user should know about the request, though it is valid (printed as ``note:`` lines)."""
        if self.image_input and self.formats != ["coreml"]:
            others = ", ".join(f for f in self.formats if f != "coreml")
            note = "" if self.fold_normalize else " (add --fold-normalize for pixel input there)"
            return [f"--image-input applies to Core ML only; {others} take a tensor{note}"]
        return []

    def session_options(self) -> dict:
        """The :class:`~hvit_deploy.export.pipeline.ExportSession` keywords every model of the request shares."""
        return dict(input_size=self.input_size, batch_size=self.batch, recipe=self.recipe,
                    trust_checkpoint=self.trust_checkpoint, use_ema=self.use_ema, validate=self.validate_artifacts,
                    num_classes=self.num_classes, labels=self.labels, dynamic_batch=self.dynamic_batch,
                    fold_normalize=self.fold_normalize, image_input=self.image_input, features=self.features)

    def export_options(self) -> dict:
        """The :meth:`~hvit_deploy.export.pipeline.ExportSession.export` keywords every job shares."""
        quant = {}
        if self.quantized:
            quant = {"calibration": self.calibration, "eval_data": self.eval_data,
                     "calibration_size": self.calibration_size, "fallback": self.fallback}
        elif self.converted:
            quant = {"calibration": self.calibration, "eval_data": self.eval_data}
        return {"opset": self.opset, "precision": self.precision, **quant}

    def files(self, checkpoint: str | None = None) -> dict[str, str]:
        """Every file the request names (a cluster ships them by value), by option name."""
        named = {"labels": self.labels, "recipe": self.recipe, "checkpoint": checkpoint}
        if self.converted:
            named.update(calibration=self.calibration, eval_data=self.eval_data)
        return {k: str(v) for k, v in named.items() if v}


def find_checkpoint(directory: str | Path, name: str) -> Path | None:
    """``name``'s weights in ``directory``: its release file name, or its canonical name or an alias with a
    checkpoint suffix."""
    directory = Path(directory)
    spec = get_spec(name)
    stems = [spec.name, *spec.aliases]
    candidates = [directory / spec.weights] if spec.weights else []
    candidates += [directory / f"{s}{ext}" for s in stems for ext in CHECKPOINT_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)


def plan(request: ExportRequest) -> list[ModelPlan]:
    """The request's exports, one :class:`ModelPlan` per model, its jobs in format then form order."""
    plans = []
    for name in request.models:
        checkpoint = request.checkpoint
        if request.checkpoint_dir:
            found = find_checkpoint(request.checkpoint_dir, name)
            if found is None:
                plans.append(ModelPlan(model=name, error=f"no checkpoint for {name} in {request.checkpoint_dir}"))
                continue
            checkpoint = str(found)
        jobs = [ExportTask(model=name, format=fmt, form=form, checkpoint=checkpoint)
                for fmt in request.formats for form in request.forms]
        plans.append(ModelPlan(model=name, checkpoint=checkpoint, jobs=jobs))
    return plans
