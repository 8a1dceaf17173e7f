"""Core ML packages read back on Linux: the saved ``.mlpackage``'s own spec and ML program (not what the exporter
meant to write) must carry the variant's preprocessing — an RGB image input whose ``scale * pixel + bias`` then
the ``x 1/std`` layer in front of the network equal ``(pixel / 255 - mean) / std`` from the preprocessing record —
and, with ``--labels``, a classifier whose class labels are the labels file, in order.

The torch emulation of the same arithmetic (``image_input_check`` in the manifest) is kept as a second check.
A negative control edits the scale in the read-back spec and checks that the comparison then fails.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hvit_deploy import get_spec
from hvit_deploy.cli.export import main
from hvit_deploy.preprocess import preprocessing_for

NAME, SIZE = "efficientmod_xxs", 64
WEIGHTS = Path("Data") / "com.apple.CoreML" / "weights"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("coreml")
    labels = [f"class_{i:04d}" for i in range(1000)]
    (root / "labels.txt").write_text("\n".join(labels) + "\n")
    rc = main([NAME, "--to", "coreml", "--image-input", "--labels", str(root / "labels.txt"),
               "--input-size", str(SIZE), "--out", str(root / "out")])
    assert rc == 0
    entry = json.loads((root / "out" / "manifest.json").read_text())["artifacts"][0]
    return root / "out" / entry["path"], entry, labels


def _load(path: Path):
    import coremltools as ct

    return ct.utils.load_spec(str(path))


def _program(spec, path: Path):
    """The ML program as coremltools reads it back from the protobuf (constants resolved from the weights)."""
    from coremltools.converters.mil.frontend.milproto.load import load

    return load(spec, spec.specificationVersion, str(path / WEIGHTS))


def _image_front(prog) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, bias, per-channel factor) of the ops between the image input and the first convolution:
    ``mul(input, scale)``, ``add(_, bias)``, then the ``mul(_, 1/std)`` layer in front of the network."""
    ops = [o for o in prog.functions["main"].operations if o.op_type != "const"]
    mul, add, div_std, conv = ops[:4]
    assert (mul.op_type, add.op_type, div_std.op_type, conv.op_type) == ("mul", "add", "mul", "conv")
    assert mul.x.name == "input" and add.x.name == mul.outputs[0].name
    assert div_std.x.name == add.outputs[0].name and conv.x.name == div_std.outputs[0].name
    scale = float(np.asarray(mul.y.val))
    bias = np.asarray(add.y.val, dtype=np.float64).reshape(-1)
    factor = np.asarray(div_std.y.val, dtype=np.float64).reshape(-1)
    return scale, bias, factor


def _mismatch(prog, name: str, size: int) -> list[str]:
    """What differs between the package's front and the preprocessing record (empty: they agree)."""
    pre = preprocessing_for(get_spec(name), size)
    mean, std = np.asarray(pre.mean, dtype=np.float64), np.asarray(pre.std, dtype=np.float64)
    scale, bias, factor = _image_front(prog)
    bad = []
    if len(bias) != 3 or len(factor) != 3:
        return [f"bias {bias} / factor {factor} are not per RGB channel"]
    # the whole front, per channel: pixel * (scale * factor) + bias * factor == pixel / (255 std) - mean / std
    if not np.allclose(scale * factor, 1.0 / (255.0 * std), rtol=1e-5):
        bad.append(f"pixel scale {scale * factor} != 1/(255*std) {1.0 / (255.0 * std)}")
    if not np.allclose(bias * factor, -mean / std, rtol=1e-5, atol=1e-7):
        bad.append(f"offset {bias * factor} != -mean/std {-mean / std}")
    # and the split the exporter documents: the ImageType does pixel/255 - mean, the layer x 1/std
    if not np.isclose(scale, 1.0 / 255.0, rtol=1e-6):
        bad.append(f"ImageType scale {scale} != 1/255")
    if not np.allclose(bias, -mean, rtol=1e-6):
        bad.append(f"ImageType bias {bias} != -mean {-mean}")
    return bad


@pytest.mark.slow
def test_input_is_an_rgb_image_of_the_export_size(package):
    path, entry, _ = package
    spec = _load(path)
    assert spec.WhichOneof("Type") == "mlProgram"
    (inp,) = spec.description.input
    assert inp.name == entry["input_name"] and inp.type.WhichOneof("Type") == "imageType"
    img = inp.type.imageType
    import coremltools as ct

    assert img.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    assert (img.width, img.height) == (SIZE, SIZE)
    assert entry["input_kind"] == "image" and entry["preprocessing"]["input_kind"] == "image"


@pytest.mark.slow
def test_image_scale_bias_and_std_layer_match_the_preprocessing_record(package):
    path, entry, _ = package
    prog = _program(_load(path), path)
    assert _mismatch(prog, NAME, SIZE) == []
    # the manifest's preprocessing record says the same as the shipped file
    pre = entry["preprocessing"]
    assert pre["mean"] == pytest.approx(list(get_spec(NAME).mean)) and pre["std"] == pytest.approx(
        list(get_spec(NAME).std))
    # second check: the torch emulation of the same front, recorded at export time
    check = entry["image_input_check"]
    assert check["max_abs"] < 1e-4 and check["top1"] == 1.0 and check["photos"] == ["chelsea.png", "coffee.png"]


@pytest.mark.slow
def test_a_wrong_scale_in_the_package_is_caught(package):
    """Negative control: the read-back spec with its ImageType scale changed from 1/255 to 1 (a classic bug: the
    package then expects 0-1 floats) no longer matches the record."""
    path, _, _ = package
    spec = _load(path)
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    const = next(op for op in block.operations
                 if op.type == "const" and op.outputs[0].name == "input__scaled___y_0")
    floats = const.attributes["val"].immediateValue.tensor.floats.values
    assert floats[0] == pytest.approx(1 / 255)
    floats[0] = 1.0
    bad = _mismatch(_program(spec, path), NAME, SIZE)
    assert any("pixel scale" in b for b in bad) and any("ImageType scale" in b for b in bad)


@pytest.mark.slow
def test_classifier_labels_equal_the_labels_file(package):
    path, entry, labels = package
    spec = _load(path)
    d = spec.description
    assert [o.name for o in d.output] == entry["outputs"] == ["classLabel", "classLabel_probs"]
    assert d.predictedFeatureName == "classLabel" and d.predictedProbabilitiesName == "classLabel_probs"
    prog = _program(spec, path)
    (classify,) = [o for o in prog.functions["main"].operations if o.op_type == "classify"]
    assert [str(c) for c in classify.classes.val] == labels
    assert entry["labels"]["count"] == 1000 and entry["labels"]["file"] == "labels.txt"
