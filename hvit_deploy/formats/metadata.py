"""What an artifact says about itself: the model, its classes and labels, and how to preprocess its input.

The same flat ``{key: string}`` table goes into every format, written by the exporter before the artifact is
saved (so the saved file, its sha256 and its validation are of the file with its metadata):

* ONNX: ``metadata_props`` (:func:`apply_onnx`),
* OpenVINO IR: ``rt_info`` under ``model_info`` (:func:`apply_openvino`),
* Core ML: ``user_defined_metadata`` (:func:`apply_coreml`).

:func:`read_metadata` reads the table back from any saved artifact. Lists (mean, std, shapes, labels) are JSON.
Preprocessing is the model's evaluation transform at the artifact's size, the one record of
:func:`hvit_deploy.preprocess.preprocessing_for` (per-size overrides included): RGB, NCHW, pixel values scaled to
0-1 (``/255``), then ``(x - mean) / std``; ``resize`` "shorter" (the shorter side to ``resize_to``, then a centre
crop) or "squash" (straight to the input size).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..preprocess import preprocessing_for
from ..registry import ModelSpec

OPENVINO_SECTION = "model_info"


def artifact_metadata(spec: ModelSpec, *, input_shape, output_name: str, num_classes: int,
                      labels: list[str] | None = None, input_name: str = "input",
                      input_kind: str = "normalized") -> dict[str, str]:
    """The table for one artifact; every value is a string. ``input_kind``: "normalized" (the artifact takes
    the normalised tensor), "pixels" (RGB 0-255, normalised inside: ``--fold-normalize``) or "image" (a Core ML
    image input, normalised inside: ``--image-input``); mean and std are recorded in every case."""
    from ..versions import __version__

    h, w = int(input_shape[-2]), int(input_shape[-1])
    pre = preprocessing_for(spec, (h, w))
    meta = {
        "producer": f"hvit-deploy {__version__}",
        "model": spec.name,
        "family": spec.family,
        "input_name": input_name,
        "output_name": output_name if isinstance(output_name, str) else json.dumps(list(output_name)),
        "input_shape": json.dumps([int(v) for v in input_shape]),
        "input_size": json.dumps([int(input_shape[-3]), h, w]),
        "num_classes": str(int(num_classes)),
        "color_order": "RGB",
        "layout": "NCHW",
        "input_kind": input_kind,
        "value_range": "0-1" if input_kind == "normalized" else "0-255",
        "pixel_scale": "1/255" if input_kind == "normalized" else "1",  # what the caller multiplies pixels by
        "normalization": "by the caller" if input_kind == "normalized" else "inside the model",
        "mean": json.dumps([float(v) for v in pre.mean]),
        "std": json.dumps([float(v) for v in pre.std]),
        "crop_pct": repr(pre.crop_pct),
        "interpolation": pre.interpolation,
        "resize": pre.resize,
        "resize_to": str(pre.resize_to),
        "preprocessing": f"RGB; {pre.describe()}; /255; (x - mean) / std; NCHW",
    }
    if input_kind != "normalized":
        meta["preprocessing"] = (f"RGB; {pre.describe()}; feed pixel values 0-255 "
                                 f"({'an image' if input_kind == 'image' else 'float, NCHW'}); the model divides "
                                 f"by 255 and normalises")
    if labels is not None:
        meta["labels"] = json.dumps(list(labels), ensure_ascii=False)
    return meta


def preprocessing_entry(meta: dict[str, str]) -> dict:
    """The manifest's ``preprocessing`` record: the same facts, typed."""
    low, high = (float(v) for v in meta["value_range"].split("-"))
    return {"color_order": meta["color_order"], "layout": meta["layout"], "value_range": [low, high],
            "input_kind": meta["input_kind"], "normalization": meta["normalization"],
            "pixel_scale": meta["pixel_scale"], "mean": json.loads(meta["mean"]), "std": json.loads(meta["std"]),
            "input_size": json.loads(meta["input_size"]), "crop_pct": float(meta["crop_pct"]),
            "interpolation": meta["interpolation"], "resize": meta.get("resize", "shorter"),
            **({"resize_to": int(meta["resize_to"])} if "resize_to" in meta else {})}


def apply_onnx(model, meta: dict[str, str] | None) -> None:
    """Set ``meta`` in an ``onnx.ModelProto``'s ``metadata_props`` (replacing keys already there)."""
    if not meta:
        return
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for key, value in kept + list(meta.items()):
        model.metadata_props.add(key=key, value=value)
    model.producer_name = model.producer_name or "hvit-deploy"


def apply_openvino(ov_model, meta: dict[str, str] | None) -> None:
    for key, value in (meta or {}).items():
        ov_model.set_rt_info(value, [OPENVINO_SECTION, key])


def apply_coreml(mlmodel, meta: dict[str, str] | None) -> None:
    for key, value in (meta or {}).items():
        mlmodel.user_defined_metadata[key] = value
    if meta:
        mlmodel.short_description = f"{meta['model']} ({meta['num_classes']} classes), exported by {meta['producer']}"


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata table of a saved ``.onnx``, ``.xml`` (OpenVINO IR), ``.mlpackage``, ``.pte`` (ExecuTorch,
    its ``NAME.pte.json``) or ``.tflite`` (LiteRT)."""
    p = Path(path)
    if p.suffix == ".onnx":
        import onnx

        model = onnx.load(str(p), load_external_data=False)
        return {prop.key: prop.value for prop in model.metadata_props}
    if p.suffix == ".xml":
        import openvino as ov

        rt = ov.Core().read_model(str(p)).get_rt_info()
        if OPENVINO_SECTION not in rt:
            return {}
        section = rt[OPENVINO_SECTION]
        return {k: v.astype(str) for k, v in section.items()}
    if p.suffix == ".mlpackage":
        from .quiet import import_coremltools

        ct = import_coremltools()
        spec = ct.utils.load_spec(str(p))
        return {k: v for k, v in spec.description.metadata.userDefined.items()
                if not k.startswith("com.github.apple.coremltools.")}
    if p.suffix == ".pte":  # ExecuTorch: NAME.pte.json beside it
        from ..formats.executorch import read_pte_metadata

        return read_pte_metadata(p)
    if p.suffix == ".tflite":
        from ..formats.litert import read_tflite_metadata

        return read_tflite_metadata(p)
    raise ValueError(f"not an artifact this package writes: {p.name}")
