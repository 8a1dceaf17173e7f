"""registry → model → rewrites → exporter (format) → artifact + validation (runtime) → manifest entry.

``export_model`` is the one-call API; :class:`ExportSession` builds a model once and exports it to several
formats (the eager reference outputs are computed once too).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ExportError, HvitError, RewriteError, ValidationError
from ..factory import check_num_classes, create_model, resolve_input_size
from ..labels import check_labels, labels_sha256, read_labels
from ..recipes import Recipe, load_recipe_file, recipe_or_default
from ..preprocess import preprocessing_for
from ..registry import get_spec
from ..rewrites import get_rewrite
from ..rewriting import rewrite as rewrite_model
from ..utils.io import ensure_writable_dir
from ..versions import tool_versions
from .features import STAGE_NAMES, StageFeatures, check_features
from ..formats import ExportJob, format_names, get_format
from ..formats.artifact import ExportResult, artifact_stem, sha256_of, size_of
from ..formats.metadata import artifact_metadata, preprocessing_entry
from ..metrics import Figures, compare, failures
from .input_layers import check_image_front, coreml_image_front, coreml_image_params, fold_normalize, to_pixels
from .inputs import validation_inputs
from .request import check_input_options

FORMATS = format_names()
DYNAMIC_CHECK_BATCH = 4  # a dynamic-batch artifact is validated at batch 1 and at this batch
SUFFIX = {f: get_format(f).suffix for f in FORMATS}  # kept for callers; the table holds it (format.suffix)


def _recipe(spec, recipe: Recipe | str | os.PathLike | None) -> Recipe:
    """The family's recipe (the default one for a --plugin family without a YAML), a given one, or one read from
    a YAML file."""
    if recipe is None:
        return recipe_or_default(spec.family)
    if isinstance(recipe, Recipe):
        return recipe
    return load_recipe_file(recipe)


class ExportSession:
    """One model, built once, exported to any number of formats.

    ``num_classes``: see :func:`~hvit_deploy.factory.create_model` (default: the checkpoint's head, else 1000;
    0: no head, the output is ``features``). ``labels``: a labels file (see :mod:`hvit_deploy.labels`) or a list
    of names, one per class; stored in every artifact (and makes the Core ML package a classifier).
    ``dynamic_batch``: artifacts take any batch (ONNX/OpenVINO: a symbolic axis 0; Core ML: 1..64); they are
    validated at batch 1 and, against eager PyTorch run at that batch, at batch 4 (the validation inputs stacked).
    ``fold_normalize``: artifacts take RGB pixel values 0-255 and normalise inside (validated on the validation
    inputs turned back into pixels). ``image_input``: the Core ML package takes an RGB image (see
    :mod:`.input_layers`); other formats are unaffected. ``features``: a backbone export, the four stage maps as
    outputs ``stage1..stage4`` (see :mod:`.features`), each validated; detection checkpoints load."""

    def __init__(self, name: str, *, checkpoint: str | os.PathLike | None = None, input_size=None,
                 batch_size: int | None = None, recipe: Recipe | str | os.PathLike | None = None,
                 trust_checkpoint: bool = False, use_ema: bool = False, validate: bool = True,
                 num_classes: int | None = None, labels: str | os.PathLike | list[str] | None = None,
                 dynamic_batch: bool = False, fold_normalize: bool = False, image_input: bool = False,
                 features: bool = False):
        self.spec = get_spec(name)
        self.name = self.spec.name
        self.features = bool(features)
        if self.features and self.spec.feature_stages is None:
            check_features(self.spec, self.spec.input_size)  # raises: no pyramid
        check_input_options(batch=batch_size, dynamic_batch=dynamic_batch, image_input=image_input,
                            features=self.features, labels=labels is not None)
        self.recipe = _recipe(self.spec, recipe)
        self.input_size = self._input_size(input_size or self.recipe.input_size_for(self.name))
        self.dynamic_batch = bool(dynamic_batch)
        self.batch = 1 if self.dynamic_batch else int(batch_size or self.recipe.batch_size)
        self.fold_normalize = bool(fold_normalize)
        self.image_input = bool(image_input)
        check_input_options(batch=self.batch, dynamic_batch=False, image_input=self.image_input, features=False,
                            labels=False)  # the recipe's batch
        self.input_shape = (self.batch,) + tuple(self.input_size)
        self.checkpoint = str(checkpoint) if checkpoint else None
        check_num_classes(num_classes)
        labels_source = None
        if labels is not None and not isinstance(labels, (list, tuple)):
            labels_source = Path(labels).name
            labels = read_labels(labels)  # a bad file is refused before the model is built
        self._build(checkpoint, num_classes=num_classes, trust_checkpoint=trust_checkpoint, use_ema=use_ema)
        self.labels = None
        self.labels_source = labels_source
        if labels is not None:
            self.labels = check_labels([str(v) for v in labels], self.num_classes,
                                       source=f"labels file {labels_source}" if labels_source else "labels")
        self.validate = validate
        self._references()

    def _input_size(self, size) -> tuple[int, int, int]:
        """The (C, H, W) to export at; a feature export's resolution is checked against its stages."""
        if self.features:
            if isinstance(size, (tuple, list)) and len(size) >= 2:
                check_features(self.spec, (3,) + tuple(size)[-2:])
            elif isinstance(size, int):
                check_features(self.spec, (3, size, size))
        resolved = resolve_input_size(self.spec, size, rectangular=self.features)
        if self.features:
            check_features(self.spec, resolved)
        return resolved

    def _build(self, checkpoint, *, num_classes, trust_checkpoint: bool, use_ema: bool) -> None:
        t0 = time.perf_counter()
        # without a checkpoint the weights are random: drawn from seed 0 (as hvit-bench's torch runtime draws
        # them), so every export of a model is of the same network, in any process, and the caller's RNG is untouched
        with torch.random.fork_rng(devices=[]):
            if checkpoint is None:
                torch.manual_seed(0)
            self.model = create_model(self.name, checkpoint, input_size=self.input_size, num_classes=num_classes,
                                      trust_checkpoint=trust_checkpoint, use_ema=use_ema, backbone=self.features)
        self.build_s = time.perf_counter() - t0
        self.num_classes = int(self.model.hvit_num_classes)
        self.output_name = "logits" if self.num_classes else "features"
        if self.features:
            self.output_name = list(STAGE_NAMES)

    def _references(self) -> None:
        """The validation inputs and eager PyTorch's outputs on them (once per session)."""
        v = self.recipe.validation
        self.inputs = validation_inputs(self.input_shape, self.spec, random_inputs=v.random_inputs, seed=v.seed,
                                        real_image=v.real_image)
        self.reference_model = StageFeatures(self.model, self.input_size) if self.features else self.model
        with torch.no_grad():
            self.references = [self._eager(x) for _, x in self.inputs]
        self.output_shape = None
        if self.references:
            self.output_shape = ([tuple(r.shape) for r in self.references[0]] if self.features
                                 else tuple(self.references[0].shape))
        self.batched = None  # (label, array, eager reference) at DYNAMIC_CHECK_BATCH for a dynamic batch
        if self.dynamic_batch:
            arrays = [x for _, x in self.inputs]
            rng = np.random.default_rng(v.seed + 1)
            while len(arrays) < DYNAMIC_CHECK_BATCH:
                arrays.append(rng.standard_normal(self.input_shape, dtype=np.float32))
            stacked = np.ascontiguousarray(np.concatenate(arrays[:DYNAMIC_CHECK_BATCH], axis=0))
            with torch.no_grad():
                ref = self._eager(stacked)
            self.batched = (f"batch-{DYNAMIC_CHECK_BATCH}", stacked, ref)

    # ------------------------------------------------------------------------------------------------ helpers
    def _eager(self, x: np.ndarray):
        out = self.reference_model(torch.from_numpy(x))
        return tuple(t.numpy() for t in out) if self.features else out.numpy()

    def input_kind(self, fmt: str) -> str:
        """What the artifact's input is: "normalized" (the model's tensor), "pixels" (0-255, normalised inside:
        ``--fold-normalize``) or "image" (a Core ML image: ``--image-input``)."""
        if fmt == "coreml" and self.image_input:
            return "image"
        return "pixels" if self.fold_normalize else "normalized"

    def _validator(self, fmt: str, precision: str, *, probabilities: bool = False, pixels: bool = False):
        """``validate(run_fn)`` → (figures, failures). ``probabilities``: the artifact outputs softmax(logits)
        (a Core ML classifier), so the references are softmaxed too. ``pixels``: the artifact normalises its
        input itself, so it is fed the validation inputs as 0-255 pixel values."""
        tol = self.recipe.tolerance_for(fmt, precision, self.name)
        refs = list(self.references)
        xs = [x for _, x in self.inputs]
        labels = [label for label, _ in self.inputs]
        if self.batched is not None:  # the same artifact, run at batch 4 against eager PyTorch at batch 4
            labels.append(self.batched[0])
            xs.append(self.batched[1])
            refs.append(self.batched[2])
        if pixels:
            xs = [to_pixels(x, self.spec) for x in xs]
        if probabilities:
            refs = [torch.softmax(torch.from_numpy(r), dim=-1).numpy() for r in refs]
        def biggest(r):
            return max(float(np.abs(t).max()) for t in r) if self.features else float(np.abs(r).max())

        max_ref = max(biggest(r) for r in refs) if refs else 0.0

        def figures(pairs):
            if not self.features:
                return compare(pairs, tie_atol=tol.atol), None
            per = {name: compare([(r[k], o[k]) for r, o in pairs], tie_atol=tol.atol)
                   for k, name in enumerate(STAGE_NAMES)}
            worst = Figures(max_abs=max(f.max_abs for f in per.values()),
                            max_rel=max(f.max_rel for f in per.values()),
                            min_cosine=min(f.min_cosine for f in per.values()),
                            top1=min(f.top1 for f in per.values()), top5=min(f.top5 for f in per.values()),
                            inputs=len(pairs), finite=all(f.finite for f in per.values()))
            return worst, {name: f.as_dict() for name, f in per.items()}

        def validate(run_fn):
            outs = run_fn(xs)
            fig, per_stage = figures(list(zip(refs, outs)))
            d = fig.as_dict()
            d["tolerance"] = tol.model_dump()
            d["inputs_used"] = labels
            if per_stage is not None:
                d["outputs"] = per_stage
            if self.batched is not None:
                d["batches"] = sorted({int(x.shape[0]) for x in xs})
                d[labels[-1]] = figures([(refs[-1], outs[-1])])[0].as_dict()
            return d, failures(fig, tol, max_ref=max_ref)

        return validate if self.validate else None

    def prepared(self, fmt: str, rewrite: bool) -> tuple[torch.nn.Module, list[str], dict]:
        if not rewrite:
            return self.reference_model, [], {}
        try:
            fmt = get_format(fmt).rewrites_like or fmt  # executorch, litert: the onnx recipe's rewrites
            m = rewrite_model(self.model, fmt, input_size=self.input_size, batch_size=self.batch,
                              names=self.recipe.rewrites_for(fmt, self.name), dynamic_batch=self.dynamic_batch)
        except RewriteError:
            raise
        names, counts = list(m.hvit_rewrites), dict(m.hvit_rewrite_counts)
        if self.features:
            m = StageFeatures(m, self.input_size)
        return m, names, counts

    # ------------------------------------------------------------------------------------------------- export
    def export(self, fmt: str, out_dir: str | os.PathLike, *, rewrite: bool = True, opset: int | None = None,
               precision: str | None = None, **quantization) -> ExportResult:
        """``int8``/``w4``/``bf16``: the FP32 export, then the precision stage (``quantization``: see
        _export_converted)."""
        from ..quantize import PRECISIONS as CONVERTED

        form = get_format(fmt)
        fmt = form.name
        if precision in CONVERTED:
            return self._export_converted(fmt, out_dir, rewrite=rewrite, opset=opset, precision=precision,
                                          **quantization)
        out = ensure_writable_dir(out_dir)
        precision = precision or form.default_precision(self.recipe)
        if precision not in form.precisions:
            others = [f for f in FORMATS if precision in get_format(f).precisions]
            raise HvitError(f"{fmt} export takes {', '.join(form.precisions)}, not {precision}"
                            + (f"; use --precision {precision} with {' or '.join(others)}" if others else ""))
        if self.dynamic_batch and rewrite:  # refused up front, with the rewrite's name, before any work
            for name in self.recipe.rewrites_for(get_format(fmt).rewrites_like or fmt, self.name):
                if get_rewrite(name).batch == "static":
                    raise RewriteError(f"{self.name} -> {fmt}: rewrite {name!r} bakes the batch size into the graph, "
                                       f"so the rewritten model cannot take a dynamic batch; export a static --batch "
                                       f"B instead (or --no-rewrite)")
        kind = self.input_kind(fmt)
        stem = artifact_stem(self.name, rewritten=rewrite, precision=precision, input_shape=self.input_shape,
                             default_size=self.spec.input_size, dynamic_batch=self.dynamic_batch, input_kind=kind,
                             features=self.features)
        path = out / f"{stem}{form.suffix}"
        result = ExportResult(model=self.name, format=fmt, ok=False, input_shape=self.input_shape)
        t0 = time.perf_counter()
        front_check = None
        try:
            model, names, counts = self.prepared(fmt, rewrite)
            result.rewrites = names
            example = torch.from_numpy(self.inputs[0][1]) if self.inputs else torch.randn(self.input_shape)
            if self.dynamic_batch:  # exporters specialise a batch of 1; trace at 2
                example = torch.from_numpy(np.ascontiguousarray(self.batched[1][:2]))
            classifier = fmt == "coreml" and self.labels is not None
            validate = self._validator(fmt, precision, probabilities=classifier, pixels=kind == "pixels")
            meta = dict(metadata=self.metadata(fmt), output_name=self.output_name, dynamic_batch=self.dynamic_batch)
            if kind == "pixels":
                model = fold_normalize(model, self.spec)
                example = torch.from_numpy(to_pixels(example.numpy(), self.spec))
            elif kind == "image":
                model = coreml_image_front(model, self.spec)
                front_check = self._check_image_front(model, fmt, precision)
                meta["image_input"] = coreml_image_params(self.spec)
            if fmt == "coreml":
                meta["class_labels"] = self.labels
            info = form.export(ExportJob(model=model, example=example, path=path, recipe=self.recipe,
                                         validate=validate, precision=precision, opset=opset,
                                         output_shape=self.output_shape, options=meta))
            result.ok = True
            result.path = path
            result.validation = info.get("validation", {})
        except (ExportError, ValidationError, RewriteError) as e:
            result.error = str(e)
            info, counts = {}, locals().get("counts", {})
        result.seconds = round(time.perf_counter() - t0, 2)
        result.entry = self._entry(result, info, counts, precision, opset, rewrite=rewrite, kind=kind,
                                   front_check=front_check)
        return result

    def _export_converted(self, fmt: str, out_dir, *, rewrite: bool, opset: int | None, precision: str,
                          calibration=None, eval_data=None, calibration_size: int | None = None,
                          fallback: bool = True, warn=None) -> ExportResult:
        """The FP32 export (validated, into a hidden work folder inside ``out_dir``), then the precision stage;
        only an artifact that passes reaches ``out_dir``, under ``NAME-int8.*`` / ``NAME-w4.*``."""
        import shutil
        import tempfile

        from .. import quantize

        warn = warn or quantize.stage.warn
        quantize.check_request(fmt, precision, calibration)
        out = ensure_writable_dir(out_dir)
        sets = self._quantization_sets(fmt, calibration, eval_data, calibration_size, warn, precision)
        t0 = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix=".hvit-int8-", dir=out))
        try:
            fp32 = self.export(fmt, work, rewrite=rewrite, opset=opset, precision="fp32")
            stem = artifact_stem(self.name, rewritten=rewrite, precision=precision, input_shape=self.input_shape,
                                 default_size=self.spec.input_size)
            gate = self._gate_inputs(fmt, rewrite, sets) if sets and fp32.ok else None
            result = quantize.convert(fp32, precision, out_dir=out, target_name=stem + get_format(fmt).suffix,
                                      options=self.recipe.quantization, gate=gate, fallback=fallback,
                                      output_shape=self.output_shape)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        result.seconds = round(time.perf_counter() - t0, 2)
        result.entry = self._entry(result, fp32.entry, fp32.entry.get("rewrite_counts", {}), precision, opset,
                                   rewrite=rewrite, kind=fp32.entry.get("input_kind", "normalized"),
                                   front_check=fp32.entry.get("image_input_check"), source=fp32)
        return result

    def _quantization_sets(self, fmt: str, calibration, eval_data, calibration_size, warn, precision="int8"):
        """(calibration, held-out) images for ``fmt``'s INT8, read once per session and folder; None for Core
        ML's weight-only conversion, which calibrates nothing; (None, held-out) for a compute precision (bf16:
        :func:`~hvit_deploy.quantize.calibration.held_out_set`)."""
        from .. import quantize

        if precision in quantize.compute.COMPUTE_PRECISIONS:
            from ..quantize.calibration import held_out_set

            cache = self.__dict__.setdefault("_quantization_cache", {})
            key = ("held", str(calibration), str(eval_data))
            if key not in cache:
                cache[key] = (None, held_out_set(eval_data=eval_data, calibration=calibration, warn=warn,
                                                 holdout=self.recipe.quantization.holdout_size,
                                                 preprocess=preprocessing_for(self.spec, self.input_size)))
            return cache[key]

        if not quantize.stage.needs_data(fmt):
            if calibration:
                warn("Core ML int8 here is weight-only; calibrating activations needs macOS, so --calibration "
                     "is unused")
            return None
        cache = self.__dict__.setdefault("_quantization_cache", {})
        key = ("sets", str(calibration), str(eval_data), calibration_size)
        if key not in cache:
            cache[key] = quantize.stage.load_sets(
                calibration, preprocess=preprocessing_for(self.spec, self.input_size),
                options=self.recipe.quantization, eval_data=eval_data, calibration_size=calibration_size, warn=warn)
        return cache[key]

    def _gate_inputs(self, fmt: str, rewrite: bool, sets):
        """What the gate and the fallback need: eager FP32's logits on the held-out images (once per session
        and set: on a slow eager model this pass alone is minutes), the runtime, the exported module."""
        from .. import quantize

        calib, held = sets
        cache = self.__dict__.setdefault("_quantization_cache", {})
        if ("logits", held.sha256, self.batch) not in cache:
            cache[("logits", held.sha256, self.batch)] = quantize.eager_logits(self.model, held.arrays, self.batch)
        return quantize.GateInputs(calibration=calib, held_out=held, batch=self.batch,
                                   reference_logits=cache[("logits", held.sha256, self.batch)],
                                   runtime=get_format(fmt).runtime, module=lambda: self.prepared(fmt, rewrite)[0],
                                   rankings=cache.setdefault("rankings", {}))

    def _check_image_front(self, front: torch.nn.Module, fmt: str, precision: str) -> dict:
        """Core ML's ImageType arithmetic emulated in torch on the shipped photos, against the original model on
        the normalised photos; out of tolerance fails the export (there is no Core ML runtime on Linux)."""
        tol = self.recipe.tolerance_for(fmt, precision, self.name)
        pairs = [(ref, emu) for _, ref, emu in check_image_front(self.model, front, self.spec, self.input_size[1:])]
        fig = compare(pairs, tie_atol=tol.atol)
        bad = failures(fig, tol, max_ref=max(float(np.abs(r).max()) for r, _ in pairs))
        if bad:
            raise ValidationError("the image input's normalisation does not match PyTorch: " + "; ".join(bad))
        return {**fig.as_dict(), "photos": ["chelsea.png", "coffee.png"], "emulated": "pixel/255 - mean, x 1/std"}

    def metadata(self, fmt: str | None = None) -> dict[str, str]:
        """The table written into the ``fmt`` artifact (see :mod:`.metadata`)."""
        shape = (-1,) + tuple(self.input_shape[1:]) if self.dynamic_batch else self.input_shape
        return artifact_metadata(self.spec, input_shape=shape, output_name=self.output_name,
                                 num_classes=self.num_classes, labels=self.labels,
                                 input_kind=self.input_kind(fmt) if fmt else "normalized")

    def _output_shape_entry(self):
        if not self.output_shape:
            return None
        shapes = self.output_shape if self.features else [self.output_shape]
        listed = [[-1, *s[1:]] if self.dynamic_batch else list(s) for s in shapes]
        return listed if self.features else listed[0]

    def _entry(self, r: ExportResult, info: dict, counts: dict, precision: str, opset, *, rewrite: bool,
               kind: str, front_check: dict | None = None, source: ExportResult | None = None) -> dict[str, Any]:
        """The manifest entry of ``r`` (:class:`~.manifest.ManifestEntry`, as JSON): built here, and only here,
        for an FP32/FP16 export and for an artifact of the precision stage (``source``: the FP32 export it was
        converted from, whose exporter facts it keeps; ``r.entry``: the stage's own facts)."""
        from .manifest import ManifestEntry

        stage = dict(r.entry or {}) if source is not None else {}
        entry: dict[str, Any] = {
            "model": r.model, "family": self.spec.family, "format": r.format, "status": "ok" if r.ok else "failed",
            "path": None, "input_name": "input", "output_name": self.output_name, "num_classes": self.num_classes,
            "input_shape": [-1, *self.input_shape[1:]] if self.dynamic_batch else list(self.input_shape),
            "output_shape": self._output_shape_entry(), "dynamic_batch": self.dynamic_batch,
            "precision": precision,
            "artifact_precision": stage.pop("artifact_precision", precision),
            "compute_precision": stage.pop("compute_precision", None) or _compute_precision(r.format, precision, info),
            "rewrites": r.rewrites, "rewrite_counts": counts, "checkpoint": self.checkpoint,
            "labels": ({"count": len(self.labels), "sha256": labels_sha256(self.labels), "file": self.labels_source}
                       if self.labels is not None else None),
            # the evaluation transform (resize, crop) and what the artifact expects (metadata), one record
            "preprocessing": {**preprocessing_for(self.spec, self.input_size).as_dict(),
                              **preprocessing_entry(self.metadata(r.format))},
            "tools": tool_versions(),
            "seconds": r.seconds,
        }
        if r.ok and r.path is not None:
            entry.update(_file_facts(r))
        entry.update({k: info[k] for k in EXPORTER_FACTS if k in info})
        if r.format == "coreml" and self.labels is not None and r.ok:
            entry["outputs"] = ["classLabel", "classLabel_probs"]
        if r.format == "onnx" and "opset" not in entry:
            entry["opset"] = opset or self.recipe.onnx.opset
        entry["validation"] = r.validation
        if not r.ok:
            entry["error"] = r.error
        entry.update(rewritten=bool(rewrite), input_kind=kind)
        if front_check is not None:
            entry["image_input_check"] = front_check
        if source is not None:
            entry["fp32_validation"] = source.validation
            entry.update(stage)
        return ManifestEntry.model_validate(entry).to_json()


# the exporter's facts a manifest entry keeps (an artifact of the precision stage keeps its FP32 source's)
EXPORTER_FACTS = ("exporter", "opset", "nodes", "nodes_exported", "onnxsim", "double_tensors", "attempts",
                  "minimum_deployment_target", "program", "op_types", "export_s", "delegation")


def _compute_precision(fmt: str, precision: str, info: dict) -> str:
    """What the runtime session that validated (and hvit-bench times) the artifact computes in, unless the
    exporter says: fp32 for ONNX Runtime's CPU provider and for OpenVINO (compiled with
    INFERENCE_PRECISION_HINT=f32, an fp16 IR too); Core ML's is chosen at conversion (FLOAT16 for fp16)."""
    if info.get("compute_precision"):
        return info["compute_precision"]
    return "fp16" if fmt == "coreml" and precision == "fp16" else "fp32"


def _file_facts(r: ExportResult) -> dict[str, Any]:
    """The artifact's files, content hash and size (and a hash per side file: OpenVINO's ``bin_sha256``)."""
    files = get_format(r.format).files(Path(r.path))
    facts: dict[str, Any] = {"path": Path(r.path).name, "files": [f.name for f in files], "sha256": sha256_of(r.path),
                             "size_bytes": sum(size_of(f) for f in files)}
    for side in files[1:]:
        facts[f"{side.suffix.lstrip('.')}_sha256"] = sha256_of(side)
    return facts

def export_model(name: str, fmt: str, out_dir: str | os.PathLike, *, checkpoint=None, rewrite: bool = True,
                 input_size=None, batch_size: int | None = None, opset: int | None = None,
                 precision: str | None = None, validate: bool = True, recipe=None,
                 trust_checkpoint: bool = False, num_classes: int | None = None, labels=None,
                 dynamic_batch: bool = False, fold_normalize: bool = False,
                 image_input: bool = False, features: bool = False) -> ExportResult:
    """Export one model to one format. Input errors raise :class:`HvitError`; an export or validation failure
    comes back as ``ok=False`` with ``error`` set."""
    session = ExportSession(name, checkpoint=checkpoint, input_size=input_size, batch_size=batch_size,
                            recipe=recipe, trust_checkpoint=trust_checkpoint, validate=validate,
                            num_classes=num_classes, labels=labels, dynamic_batch=dynamic_batch,
                            fold_normalize=fold_normalize, image_input=image_input, features=features)
    return session.export(fmt, out_dir, rewrite=rewrite, opset=opset, precision=precision)
