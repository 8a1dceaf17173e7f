"""PyTorch → Core ML ML program (``.mlpackage``).

The graph is captured with ``torch.export`` or ``torch.jit.trace`` (in the recipe's order; the first that
converts wins). Core ML cannot run on Linux, so there the saved package's program is checked instead: input and
output names and shapes, the op types (nothing outside Core ML's op set), the largest tensor rank (Core ML takes
at most 5) and the precision of the program's tensors. On macOS the package is also run and compared.

With class labels the package is a Core ML classifier (``ct.ClassifierConfig``): a softmax is appended to the
network and the outputs are ``classLabel`` (the top class's name) and ``classLabel_probs`` (name → probability),
coremltools' names; without labels the output is the logits tensor (``features`` for a headless model).
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ExportError
from ..recipes import CoremlOptions
from .base import Format, register_format
from .onnx import BATCH_DIM, INPUT_NAME, MAX_DYNAMIC_BATCH, OUTPUT_NAME, _first_line
from .quiet import captured, import_coremltools

CAN_PREDICT = platform.system() == "Darwin"
CLASS_LABEL, CLASS_PROBS = "classLabel", "classLabel_probs"


def _capture(model: torch.nn.Module, example: torch.Tensor, how: str, dynamic_batch: bool = False):
    with torch.no_grad():
        if how == "export":
            shapes = ({0: torch.export.Dim(BATCH_DIM, min=1, max=MAX_DYNAMIC_BATCH)},) if dynamic_batch else None
            return torch.export.export(model, (example,), dynamic_shapes=shapes).run_decompositions({})
        return torch.jit.trace(model, example, check_trace=False)


def inspect_package(path: str | Path) -> dict:
    """Facts of a saved ML program, read from its spec (works on any OS)."""
    ct = import_coremltools()
    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise ExportError(f"{Path(path).name} is a {spec.WhichOneof('Type')}, not an ML program")
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    ops: Counter = Counter()
    dtypes: Counter = Counter()
    max_rank = 0

    def walk(blk):
        nonlocal max_rank
        for op in blk.operations:
            ops[op.type] += 1
            for out in op.outputs:
                tt = out.type.tensorType
                max_rank = max(max_rank, tt.rank)
                if op.type != "const":
                    dtypes[ct.proto.MIL_pb2.DataType.Name(tt.dataType)] += 1
            for nested in op.blocks:
                walk(nested)

    walk(block)

    def io(desc):
        kind = desc.type.WhichOneof("Type")
        if kind == "imageType":
            img = desc.type.imageType
            return {"name": desc.name, "type": kind, "width": int(img.width), "height": int(img.height),
                    "color_space": ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(img.colorSpace)}
        if kind != "multiArrayType":
            return {"name": desc.name, "type": kind}
        arr = desc.type.multiArrayType
        out = {"name": desc.name, "shape": list(arr.shape),
               "dtype": ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType)}
        ranges = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges]
        if ranges and ranges[0][0] != ranges[0][1]:
            out["batch_range"] = [int(ranges[0][0]), int(ranges[0][1])]
        return out

    return {
        "spec_version": spec.specificationVersion,
        "opset": fn.opset,
        "inputs": [io(d) for d in spec.description.input],
        "outputs": [io(d) for d in spec.description.output],
        "op_types": dict(sorted(((k, v) for k, v in ops.items() if k != "const"), key=lambda kv: (-kv[1], kv[0]))),
        "ops": sum(v for k, v in ops.items() if k != "const"),
        "max_rank": max_rank,
        "tensor_dtypes": dict(dtypes),
        "predicted_feature": spec.description.predictedFeatureName or None,
        "predicted_probabilities": spec.description.predictedProbabilitiesName or None,
        "user_metadata": {k: v for k, v in spec.description.metadata.userDefined.items()
                          if not k.startswith("com.github.apple.coremltools.")},
    }


def check_program(facts: dict, example_shape: tuple[int, ...], output_shape: tuple[int, ...], precision: str, *,
                  output_name: str = OUTPUT_NAME, class_labels: list[str] | None = None,
                  dynamic_batch: bool = False, image_input: bool = False) -> list[str]:
    """What is wrong with a saved program, in words. A classifier (``class_labels``) must have the outputs
    ``classLabel`` (string) and ``classLabel_probs`` (dictionary) and record them as its predicted features.
    ``dynamic_batch``: the input's default shape is ``example_shape`` at batch 1 and its batch ranges over
    ``1..MAX_DYNAMIC_BATCH``; the output's batch is then left unchecked (Core ML records no static shape).
    ``image_input``: the input must be an RGB image of the example's height and width."""
    bad = []
    ins, outs = facts["inputs"], facts["outputs"]
    if image_input:
        want = {"name": INPUT_NAME, "type": "imageType", "width": int(example_shape[-1]),
                "height": int(example_shape[-2]), "color_space": "RGB"}
        if ins != [want]:
            bad.append(f"inputs {ins} != [{want}]")
        ins = []  # checked
    if dynamic_batch:
        example_shape = (1,) + tuple(example_shape[1:])
        output_shape = tuple(output_shape)
    if ins and ([i["name"] for i in ins] != [INPUT_NAME] or tuple(ins[0].get("shape", ())) != tuple(example_shape)):
        bad.append(f"inputs {[(i['name'], i.get('shape')) for i in ins]} != [{INPUT_NAME} {list(example_shape)}]")
    if dynamic_batch and ins and ins[0].get("batch_range") != [1, MAX_DYNAMIC_BATCH]:
        bad.append(f"input batch range {ins[0].get('batch_range')} != [1, {MAX_DYNAMIC_BATCH}]")
    if not dynamic_batch and ins and "batch_range" in ins[0]:
        bad.append(f"input batch ranges over {ins[0]['batch_range']} in a static program")
    if class_labels is not None:
        got = [(o["name"], o.get("type", "multiArrayType")) for o in outs]
        want = [(CLASS_LABEL, "stringType"), (CLASS_PROBS, "dictionaryType")]
        if got != want:
            bad.append(f"classifier outputs {got} != {want}")
        if (facts.get("predicted_feature"), facts.get("predicted_probabilities")) != (CLASS_LABEL, CLASS_PROBS):
            got = f"{facts.get('predicted_feature')!r}/{facts.get('predicted_probabilities')!r}"
            bad.append(f"predicted features {got} != {CLASS_LABEL!r}/{CLASS_PROBS!r}")
        if facts["op_types"].get("classify", 0) != 1:
            bad.append("no classify op in a classifier program")
    else:
        names = [output_name] if isinstance(output_name, str) else list(output_name)
        shapes = [tuple(output_shape)] if isinstance(output_name, str) else [tuple(s) for s in output_shape]

        def fits(got, want):
            got = tuple(got)
            return got == want or (dynamic_batch and got in ((), (1,) + want[1:]))

        if [o["name"] for o in outs] != names or not all(fits(o.get("shape", ()), w) for o, w in zip(outs, shapes)):
            bad.append(f"outputs {[(o['name'], o.get('shape')) for o in outs]} != "
                       f"{[(n, list(s)) for n, s in zip(names, shapes)]}")
    if facts["max_rank"] > 5:
        bad.append(f"a tensor of rank {facts['max_rank']} (Core ML takes at most 5)")
    fp16 = facts["tensor_dtypes"].get("FLOAT16", 0)
    if precision in ("int8", "w4"):  # compressed weights: expanded by constexpr ops, activations stay fp32
        weight_ops = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense")
        if not any(facts["op_types"].get(k) for k in weight_ops):
            bad.append(f"no compressed-weight ops ({', '.join(weight_ops)}) in a {precision} program")
        if fp16:
            bad.append(f"{fp16} FLOAT16 tensors in a {precision} (fp32 compute) program")
    elif precision == "fp32" and fp16:
        bad.append(f"{fp16} FLOAT16 tensors in an fp32 program")
    if precision == "fp16" and not fp16:
        bad.append("no FLOAT16 tensors in an fp16 program")
    return bad


def run_coreml(path: str | Path, inputs: list[np.ndarray], output_name: str | list[str] = OUTPUT_NAME,
               class_labels: list[str] | None = None) -> list[np.ndarray]:  # pragma: no cover - macOS only
    """Outputs per input, the package opened on the ``coreml`` runtime, CPU only (validation checks the
    program, not the ANE); a classifier's probabilities come back as a (1, classes) array in label order."""
    from ..runtimes import open_runtime

    rt = open_runtime("coreml", {"artifact": str(path), "compute_units": "CPU_ONLY"})
    ml = rt.mlmodel
    if class_labels is None and not isinstance(output_name, str):
        return [tuple(np.asarray(ml.predict({INPUT_NAME: x})[n]) for n in output_name) for x in inputs]
    if class_labels is None:
        return [np.asarray(ml.predict({INPUT_NAME: x})[output_name]) for x in inputs]
    outs = []
    for x in inputs:
        probs = ml.predict({INPUT_NAME: x})[CLASS_PROBS]
        outs.append(np.asarray([[probs[name] for name in class_labels]], dtype=np.float32))
    return outs


def export_coreml(
    model: torch.nn.Module,
    example: torch.Tensor,
    pkg_path: Path,
    opts: CoremlOptions,
    validate: Callable | None,
    output_shape: tuple[int, ...],
    precision: str | None = None,
    *,
    metadata: dict[str, str] | None = None,
    output_name: str | list[str] = OUTPUT_NAME,
    class_labels: list[str] | None = None,
    dynamic_batch: bool = False,
    image_input: dict | None = None,
) -> dict:
    """Convert and save ``model``. ``metadata`` goes into the package's user-defined metadata (see
    :mod:`.metadata`); ``class_labels`` makes it a classifier (softmax appended, ``classLabel`` and
    ``classLabel_probs`` outputs; on macOS ``validate`` then compares probabilities). ``dynamic_batch``: the
    input's batch is a ``ct.RangeDim(1, MAX_DYNAMIC_BATCH)`` (default 1); pass an example with a batch of 2.
    ``image_input``: ``{"scale", "bias", "color_layout"}`` of a ``ct.ImageType`` input (see :mod:`.input_layers`;
    ``model`` must already carry the rest of the normalisation)."""
    from .metadata import apply_coreml

    ct = import_coremltools()
    precision = precision or opts.precision
    names = [output_name] if isinstance(output_name, str) else list(output_name)
    convert_kw: dict = {"outputs": [ct.TensorType(name=n) for n in names]}
    if class_labels is not None:
        model = torch.nn.Sequential(model, torch.nn.Softmax(dim=-1)).eval()
        convert_kw = {"outputs": [ct.TensorType(name="probabilities")],
                      "classifier_config": ct.ClassifierConfig(list(class_labels), predicted_feature_name=CLASS_LABEL,
                                                               predicted_probabilities_output="probabilities")}
    target = getattr(ct.target, opts.minimum_deployment_target)
    compute_precision = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    tmp = pkg_path.with_name(f".{pkg_path.stem}.{os.getpid()}.mlpackage")
    attempts = []
    t0 = time.perf_counter()
    mlmodel = None
    for how in opts.capture:
        try:
            with captured():
                source = _capture(model, example, how, dynamic_batch)
                shape = ((ct.RangeDim(1, MAX_DYNAMIC_BATCH, default=1),) + tuple(example.shape[1:])
                         if dynamic_batch else tuple(example.shape))
                if image_input is not None:
                    inp = ct.ImageType(name=INPUT_NAME, shape=shape, scale=image_input["scale"],
                                       bias=image_input["bias"],
                                       color_layout=getattr(ct.colorlayout, image_input["color_layout"]))
                else:
                    inp = ct.TensorType(name=INPUT_NAME, shape=shape)
                mlmodel = ct.convert(
                    source,
                    inputs=[inp],
                    convert_to="mlprogram",
                    compute_precision=compute_precision,
                    minimum_deployment_target=target,
                    **convert_kw,
                )
            attempts.append({"capture": how, "error": None})
            break
        except Exception as e:
            attempts.append({"capture": how, "error": f"{type(e).__name__}: {_first_line(e)}"})
    if mlmodel is None:
        raise ExportError("Core ML conversion failed: " + "; ".join(f"{a['capture']}: {a['error']}" for a in attempts))
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        apply_coreml(mlmodel, metadata)
        mlmodel.save(str(tmp))
        facts = inspect_package(tmp)
        info = {"exporter": f"coremltools ({attempts[-1]['capture']})", "export_s": round(time.perf_counter() - t0, 2),
                "precision": precision, "minimum_deployment_target": opts.minimum_deployment_target,
                "attempts": attempts, "program": facts, "op_types": facts["op_types"]}
        bad = check_program(facts, tuple(example.shape), output_shape, precision, output_name=output_name,
                            class_labels=class_labels, dynamic_batch=dynamic_batch,
                            image_input=image_input is not None)
        if bad:
            raise ExportError("Core ML program check failed: " + "; ".join(bad))
        if CAN_PREDICT and validate is not None and image_input is None:  # pragma: no cover - macOS only
            figures, bad = validate(lambda xs: run_coreml(tmp, xs, output_name, class_labels))
            info["validation"] = figures
            if bad:
                raise ExportError("Core ML output does not match PyTorch: " + "; ".join(bad))
        else:
            reason = ("Core ML runs only on macOS; the program was checked instead" if not CAN_PREDICT else
                      "an image input is checked by emulating its normalisation in torch (image_input_check)")
            info["validation"] = {"ran": False, "reason": reason}
        if pkg_path.exists():
            shutil.rmtree(pkg_path)
        os.replace(tmp, pkg_path)
        return info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export(job) -> dict:
    return export_coreml(job.model, job.example, job.path, job.recipe.coreml, job.validate, job.output_shape,
                         precision=job.precision, **job.options)


register_format(Format(
    name="coreml", suffix=".mlpackage", export=_export, run=run_coreml, precisions=("fp32", "fp16"),
    default_precision=lambda recipe: recipe.coreml.precision, tools=("torch", "coremltools"), runtime="coreml",
    directory=True, order=2, artifact_precisions=("fp32", "fp16", "int8", "w4"),
    aliases=("mlpackage", "coreml-mlprogram"), description="Core ML ML program (.mlpackage) via coremltools"))
