"""The format table (each format's facts declared once, asked by path or name) and the export request and its
plan (the jobs local and cluster runs execute)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hvit_deploy
from hvit_deploy.errors import HvitError
from hvit_deploy.export import ExportRequest, failed_entry, plan
from hvit_deploy.formats import (UnknownFormatError, artifact_files, format_names, format_of_path, get_format,
                                 parse_formats)
from hvit_deploy.formats.artifact import size_of
from hvit_deploy.utils.batching import run_in_batches

PKG = Path(hvit_deploy.__file__).resolve().parent


def test_every_format_module_is_found_and_ordered():
    assert format_names() == ("onnx", "openvino", "coreml", "executorch", "litert")
    # `all`: every format whose packages are installed (the mobile ones need the mobile extra), in table order
    assert parse_formats(["all"]) == [n for n in format_names() if get_format(n).missing() is None]
    assert parse_formats(["all"])[:3] == ["onnx", "openvino", "coreml"]
    assert parse_formats(["ir,onnx", "ov", "mlpackage"]) == ["openvino", "onnx", "coreml"]


@pytest.mark.parametrize("path, fmt, files", [
    ("out/smt_t.onnx", "onnx", ["smt_t.onnx"]),
    ("out/smt_t.xml", "openvino", ["smt_t.xml", "smt_t.bin"]),
    ("out/smt_t-fp16.mlpackage", "coreml", ["smt_t-fp16.mlpackage"]),
])
def test_a_path_names_its_format_and_files(path, fmt, files):
    assert format_of_path(path) == fmt
    assert [p.name for p in artifact_files(path)] == files
    assert get_format(fmt).directory == (fmt == "coreml")
    assert get_format(fmt).runtime in ("onnxruntime", "openvino", "coreml")
    assert set(get_format(fmt).precisions) <= set(get_format(fmt).holds())


def test_unknown_names_and_suffixes_are_one_line():
    with pytest.raises(UnknownFormatError,
                       match=r"^unknown format 'tensorrt'; choose from onnx, openvino, coreml, executorch, litert or all$"):
        get_format("tensorrt")
    with pytest.raises(UnknownFormatError, match="did you mean onnx"):
        get_format("onx")
    with pytest.raises(UnknownFormatError, match=r"^m.engine: unknown artifact type \(expected .onnx, .xml, "
                                                 r"\.mlpackage, \.pte or \.tflite\)$"):
        format_of_path("m.engine")
    assert format_of_path("m.engine", strict=False) is None


def test_formats_sits_below_export_and_quantize():
    """No module of hvit_deploy.formats imports the export layer or the precision stage (imports inside
    functions included)."""
    for f in (PKG / "formats").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                assert not mod.startswith(("..export", "..quantize", "hvit_deploy.export", "hvit_deploy.quantize",
                                           "..cli", "..cluster", "..bench")), (f.name, mod)


def test_size_of_counts_a_package_folder(tmp_path):
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "w.bin").write_bytes(b"x" * 10)
    (pkg / "Manifest.json").write_bytes(b"{}")
    assert size_of(pkg) == 12


def test_run_in_batches_pads_with_the_last_row_and_drops_it():
    import numpy as np

    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    seen = []

    def fn(chunks):
        seen.extend(c.shape for c in chunks)
        return [c * 2 for c in chunks]

    out = run_in_batches(fn, x, 2)
    assert seen == [(2, 2)] * 3
    np.testing.assert_array_equal(out, x * 2)


def test_request_plans_model_format_form_jobs_in_run_order():
    req = ExportRequest(models=["twins_svt_s", "crossvit_ti"], formats=["onnx", "ir"],
                        forms=["rewritten", "original"])
    plans = plan(req)
    assert [p.model for p in plans] == ["twins_svt_s", "crossvit_ti"]
    assert [(j.format, j.form) for j in plans[0].jobs] == [("onnx", "rewritten"), ("onnx", "original"),
                                                            ("openvino", "rewritten"), ("openvino", "original")]
    assert plans[1].jobs[1].label == "crossvit_ti -> onnx (as written)"
    assert req.export_options() == {"opset": None, "precision": None}
    assert req.session_options()["validate"] is True


def test_request_checks_flags_once(tmp_path):
    def refused(**kw):
        with pytest.raises(HvitError) as e:
            ExportRequest(**kw)
        return str(e.value)

    assert refused(models=[]).startswith("name at least one model")
    assert refused(models=["smt_t"], batch=2, dynamic_batch=True) == ("--dynamic-batch takes any batch size; "
                                                                      "leave out --batch")
    assert refused(models=["smt_t"], formats=["coreml"], image_input=True, batch=2).startswith(
        "--image-input takes one image")
    assert refused(models=["smt_t"], calibration=str(tmp_path)) == "--calibration goes with --precision int8"
    assert refused(models=["smt_t", "twins_svt_s"], checkpoint=__file__).startswith(
        "--checkpoint goes with exactly one model")
    assert refused(models=["smt_t"], features=True, labels="x.txt").endswith(
        "--labels and --image-input do not apply")
    ok = ExportRequest(models=["smt_t"], formats=["onnx", "coreml"], image_input=True)
    assert ok.notes() == ["--image-input applies to Core ML only; onnx take a tensor (add --fold-normalize "
                          "for pixel input there)"]


def test_a_missing_checkpoint_is_planned_as_one_failed_entry(tmp_path):
    req = ExportRequest(models=["smt_t"], formats=["onnx", "openvino"], checkpoint_dir=str(tmp_path))
    (mp,) = plan(req)
    assert mp.jobs == [] and mp.error == f"no checkpoint for smt_t in {tmp_path}"
    assert failed_entry(mp.model, req.formats, mp.error) == {
        "schema_version": 2, "model": "smt_t", "format": "onnx,openvino", "status": "failed", "error": mp.error}
    assert failed_entry("smt_t", "onnx", "boom", rewritten=False)["rewritten"] is False
