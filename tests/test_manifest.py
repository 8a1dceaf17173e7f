"""The typed manifest (export/manifest.py), the batching helper (utils/batching.py) and the precision stage on its
own (quantize/stage.py: an FP32 ONNX file in, an INT8 one out, no export session involved)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hvit_deploy.errors import ConfigError
from hvit_deploy.export.manifest import (SCHEMA_VERSION, FailedEntry, Manifest, ManifestEntry, failed_entry,
                                         load_manifest, update_manifest)
from hvit_deploy.utils.batching import chunks, run_in_batches, whole_chunks

# a manifest as hvit-export wrote it before schema 2: no schema_version, the precision under "precision"
OLD_MANIFEST = {
    "tool": "hvit-deploy", "updated": "2026-11-02T10:00:00+00:00", "tools": {"torch": "2.14.1"},
    "artifacts": [
        {"model": "efficientmod_xxs", "family": "efficientmod", "format": "onnx", "status": "ok",
         "path": "efficientmod_xxs-int8.onnx", "files": ["efficientmod_xxs-int8.onnx"], "sha256": "ab" * 32,
         "size_bytes": 1234, "input_shape": [1, 3, 224, 224], "output_shape": [1, 1000], "precision": "int8",
         "rewrites": ["x"], "rewrite_counts": {"x": 2}, "validation": {"mean_cosine": 0.999},
         "quantization": {"layers_in_fp": ["head"]}, "size_ratio_vs_fp32": 0.27, "rewritten": True,
         "cluster": {"node_ip": "127.0.0.1"}},
        {"model": "twins_svt_s", "family": "twins", "format": "coreml", "status": "ok",
         "path": "twins_svt_s-int8.mlpackage", "precision": "int8", "validation": {}, "rewritten": True},
        "not an entry", {"no": "model"},
    ],
    "failures": [
        {"model": "smt_t", "format": "onnx", "status": "failed", "rewritten": True, "error": "boom"},
        {"model": "acmix_resnet26", "format": "onnx,openvino", "status": "failed", "error": "no checkpoint"},
    ],
}


def _write(tmp_path: Path, data) -> Path:
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    return tmp_path


def test_an_old_manifest_loads_as_typed_records(tmp_path):
    m = load_manifest(_write(tmp_path, OLD_MANIFEST))
    assert isinstance(m, Manifest) and m.schema_version == SCHEMA_VERSION and m.tools == {"torch": "2.14.1"}
    onnx, coreml = m.artifacts  # the two items that are not records are dropped
    assert isinstance(onnx, ManifestEntry) and onnx.ok and onnx.size_bytes == 1234
    assert onnx.artifact_precision == "int8" and onnx.precision == "int8" and onnx.compute_precision is None
    assert coreml.artifact_precision == "w8"   # Core ML's int8 was always 8-bit weights, float activations
    assert onnx.quantization == {"layers_in_fp": ["head"]} and onnx.model_extra == {"cluster": {"node_ip": "127.0.0.1"}}
    bad, no_ckpt = m.failures
    assert isinstance(bad, FailedEntry) and bad.error == "boom" and bad.rewritten is True
    assert no_ckpt.format == "onnx,openvino" and no_ckpt.rewritten is None
    # the JSON form keeps the keys it was read with (and says its version)
    d = onnx.to_json()
    assert d["cluster"] == {"node_ip": "127.0.0.1"} and d["precision"] == "int8" and d["schema_version"] == 2
    assert "labels" not in d and "error" not in d


def test_update_keeps_old_entries_and_drops_a_failure_once_it_succeeds(tmp_path):
    _write(tmp_path, OLD_MANIFEST)
    ok = ManifestEntry(model="smt_t", family="smt", format="onnx", status="ok", path="smt_t.onnx",
                       precision="fp32", artifact_precision="fp32", compute_precision="fp32", rewritten=True)
    again = {"model": "twins_svt_s", "family": "twins", "format": "coreml", "status": "ok",
             "path": "twins_svt_s-int8.mlpackage", "precision": "int8", "artifact_precision": "w8",
             "compute_precision": "fp32", "rewritten": True}
    path = update_manifest(tmp_path, [ok, again, failed_entry("smt_s", "openvino", "bad", rewritten=False)])
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and list(data)[:6] == [
        "schema_version", "tool", "updated", "tools", "artifacts", "failures"]
    assert [a["path"] for a in data["artifacts"]] == [
        "efficientmod_xxs-int8.onnx", "smt_t.onnx", "twins_svt_s-int8.mlpackage"]  # same file: replaced
    assert data["artifacts"][2]["compute_precision"] == "fp32"
    assert data["artifacts"][0]["cluster"] == {"node_ip": "127.0.0.1"}  # unknown keys survive
    assert [(f["model"], f["format"]) for f in data["failures"]] == [
        ("acmix_resnet26", "onnx,openvino"), ("smt_s", "openvino")]  # smt_t onnx succeeded: its failure is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]  # written atomically, no temp file left
    # the same failure twice is one entry
    update_manifest(tmp_path, [failed_entry("smt_s", "openvino", "bad again", rewritten=False)])
    fails = load_manifest(tmp_path).failures
    assert [(f.model, f.error) for f in fails] == [("acmix_resnet26", "no checkpoint"), ("smt_s", "bad again")]


def test_a_broken_manifest_is_rebuilt_and_refused_by_load(tmp_path):
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_manifest(tmp_path)
    update_manifest(tmp_path, [failed_entry("smt_t", "onnx", "x")])
    assert [f.model for f in load_manifest(tmp_path / "manifest.json").failures] == ["smt_t"]
    with pytest.raises(ConfigError, match="cannot read manifest"):
        load_manifest(tmp_path / "nope.json")


def test_batching_pads_with_the_last_row_and_trims():
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    parts = chunks(x, 2)
    assert [p.shape for p in parts] == [(2, 2)] * 3 and (parts[-1] == [[8, 9], [8, 9]]).all()
    out = run_in_batches(lambda xs: [c * 2 for c in xs], x, 2)
    np.testing.assert_array_equal(out, x * 2)
    assert [len(c) for c in whole_chunks(x, 2)] == [2, 2]          # calibration: the tail is left out
    assert (np.concatenate(whole_chunks(x[:1], 3)) == x[0]).all()  # fewer rows than a batch: repeated


def _tiny_fp32(tmp_path):
    import torch

    from hvit_deploy.formats.artifact import ExportResult, size_of

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, 4), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 8 * 8, 10)).eval()
    work = tmp_path / "work"
    work.mkdir()
    path = work / "tiny.onnx"
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), str(path), input_names=["input"], output_names=["logits"],
                      opset_version=18, dynamo=False)
    fp32 = ExportResult(model="tiny", format="onnx", ok=True, path=path, input_shape=(1, 3, 32, 32),
                        entry={"files": [path.name], "size_bytes": size_of(path)})
    return model, fp32


def _image_set(arrays, role):
    from hvit_deploy.quantize import ImageSet

    return ImageSet(root=Path("."), role=role, paths=[Path(f"{i}.png") for i in range(len(arrays))],
                    hashes=[f"{role}{i}" for i in range(len(arrays))], arrays=arrays)


@pytest.mark.parametrize("passing", [True, False])
def test_the_precision_stage_converts_an_fp32_artifact(tmp_path, passing):
    """convert() takes an FP32 export result and the gate's inputs, writes NAME-int8.onnx into out_dir only
    when the gate passes, and returns the stage's facts; it never sees an export session."""
    from hvit_deploy.quantize import GateInputs, convert, eager_logits
    from hvit_deploy.recipes import QuantGate, QuantizationOptions

    model, fp32 = _tiny_fp32(tmp_path)
    rng = np.random.default_rng(0)
    calib, held = (rng.standard_normal((n, 3, 32, 32)).astype(np.float32) for n in (6, 4))
    gate = GateInputs(calibration=_image_set(calib, "c"), held_out=_image_set(held, "h"),
                      reference_logits=eager_logits(model, held, 1), batch=1, runtime="onnxruntime")
    bar = QuantGate(min_top1_agreement=0.0, min_top5_agreement=0.0, min_mean_cosine=0.9 if passing else 1.0,
                    max_accuracy_drop=1.0)
    opts = QuantizationOptions(onnx_pre_process=False, gate=bar)
    out = tmp_path / "out"
    out.mkdir()
    r = convert(fp32, "int8", out_dir=out, target_name="tiny-int8.onnx", options=opts, gate=gate, fallback=False)
    q = r.entry["quantization"]
    assert r.entry["artifact_precision"] == "int8" and r.entry["compute_precision"] == "fp32"
    assert q["gate"]["final"]["images"] == 4 and q["calibration"]["size"] == 6 and q["fallback"]["enabled"] is False
    assert r.validation == q["gate"]["final"] and 0.9 < r.validation["mean_cosine"] <= 1.0
    if passing:
        assert r.ok and r.path == out / "tiny-int8.onnx" and r.path.is_file()
        assert 0 < r.entry["size_ratio_vs_fp32"] < 1 and q["settings"]["format"] == "QDQ"
        assert sorted(p.name for p in out.iterdir()) == ["tiny-int8.onnx"]
    else:
        assert not r.ok and r.error.startswith("INT8 accuracy gate failed (fallback off): mean cosine")
        assert list(out.iterdir()) == []  # nothing that looks like an artifact, no work folder
    assert fp32.path.is_file()  # the FP32 source is the caller's, untouched


def test_the_precision_stage_passes_on_a_failed_fp32_export(tmp_path):
    from hvit_deploy.formats.artifact import ExportResult
    from hvit_deploy.quantize import convert
    from hvit_deploy.recipes import QuantizationOptions

    fp32 = ExportResult(model="tiny", format="onnx", ok=False, error="validation failed")
    r = convert(fp32, "int8", out_dir=tmp_path, target_name="x.onnx", options=QuantizationOptions())
    assert not r.ok and r.error == "FP32 export before quantization failed: validation failed"
    assert list(tmp_path.iterdir()) == []
