"""The exporter fallbacks, forced: the recipe's ONNX exporters (``exporters: [torchscript, dynamo]``, "the first
whose export validates wins") and the Core ML capture order (``capture: [export, trace]``, "the first that
converts wins"). The first one is made to raise, or (ONNX) to write a graph whose outputs are wrong, so the real
validation rejects it; the test checks which one wins and what manifest.json records under ``attempts``.

Failures are forced through torch's public entry points (``torch.onnx.export``, ``torch.export.export``), so
nothing here depends on where hvit_deploy keeps its exporters; :func:`_force` is the one place that patches.
"""
from __future__ import annotations

import json

import pytest
import torch

from hvit_deploy.cli.export import main

MODEL = "efficientmod_xxs"


def _force(monkeypatch, *, torchscript: str | None = None, torch_export_raises: bool = False) -> dict:
    """Patch torch's exporters: ``torchscript="raise"`` makes the TorchScript ONNX exporter raise,
    ``torchscript="corrupt"`` lets it export and then negates every float weight in the file it wrote (a valid
    graph with wrong outputs); ``torch_export_raises`` makes ``torch.export.export`` (Core ML's first capture)
    raise. Returns call counts per exporter, so a test can check the fallback really ran."""
    import onnx
    from onnx import numpy_helper

    calls = {"torchscript": 0, "dynamo": 0, "torch.export": 0}
    real_onnx_export, real_torch_export = torch.onnx.export, torch.export.export

    def onnx_export(model, args, f, *a, dynamo=True, **kw):
        calls["dynamo" if dynamo else "torchscript"] += 1
        if not dynamo and torchscript == "raise":
            raise RuntimeError("forced failure of the torchscript exporter")
        out = real_onnx_export(model, args, f, *a, dynamo=dynamo, **kw)
        if not dynamo and torchscript == "corrupt":
            m = onnx.load(str(f))
            for t in m.graph.initializer:
                if t.data_type == onnx.TensorProto.FLOAT:
                    t.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(t), t.name))
            onnx.save(m, str(f))
        return out

    def torch_export(*a, **kw):
        calls["torch.export"] += 1
        if torch_export_raises:
            raise RuntimeError("forced failure of torch.export")
        return real_torch_export(*a, **kw)

    monkeypatch.setattr(torch.onnx, "export", onnx_export)
    monkeypatch.setattr(torch.export, "export", torch_export)
    return calls


def _export(cli, tmp_path, *args) -> tuple[int, str, dict]:
    out = tmp_path / "out"
    rc, _, err = cli(main, MODEL, "--out", out, *args)
    manifest = json.loads((out / "manifest.json").read_text())
    # a validated artifact is listed under "artifacts", an export that produced nothing under "failures"
    entries = [a for a in manifest["artifacts"] + manifest["failures"] if a["model"] == MODEL]
    assert len(entries) == 1
    return rc, err, entries[0]


@pytest.mark.slow
def test_torchscript_raises_dynamo_wins(cli, tmp_path, monkeypatch):
    calls = _force(monkeypatch, torchscript="raise")
    rc, err, entry = _export(cli, tmp_path, "--to", "onnx")
    assert rc == 0, err
    assert calls["torchscript"] == 1 and calls["dynamo"] == 1
    assert entry["status"] == "ok" and entry["exporter"] == "dynamo"
    first, second = entry["attempts"]
    assert first["exporter"] == "torchscript" and "forced failure of the torchscript exporter" in first["error"]
    assert second == {"exporter": "dynamo", "error": None}
    assert entry["validation"]["max_abs"] < 1e-3 and entry["validation"]["top1"] == 1.0
    assert (tmp_path / "out" / entry["path"]).is_file()
    assert not list((tmp_path / "out").glob(".*.onnx"))  # no temporary candidate left behind


@pytest.mark.slow
def test_torchscript_output_fails_validation_dynamo_wins(cli, tmp_path, monkeypatch):
    calls = _force(monkeypatch, torchscript="corrupt")
    rc, err, entry = _export(cli, tmp_path, "--to", "onnx")
    assert rc == 0, err
    assert calls["torchscript"] == 1 and calls["dynamo"] == 1
    assert entry["exporter"] == "dynamo"
    first, second = entry["attempts"]
    assert first["exporter"] == "torchscript" and first["error"].startswith("validation: ")
    assert second == {"exporter": "dynamo", "error": None}
    # the shipped file is the dynamo one, and it matches PyTorch
    assert entry["validation"]["min_cosine"] > 0.9999

    import onnx

    shipped = onnx.load(str(tmp_path / "out" / entry["path"]))
    from hvit_deploy.formats.metadata import read_metadata

    assert read_metadata(tmp_path / "out" / entry["path"])  # the winner carries its metadata
    assert len(shipped.graph.node) == entry["nodes"]


@pytest.mark.slow
def test_every_onnx_exporter_failing_is_a_failed_entry(cli, tmp_path, monkeypatch, capsys):
    """torchscript's output is wrong and dynamo is disabled by --opset 17 (it needs 18): nothing validates,
    the entry is FAILED with both reasons, exit 1, and no file is shipped."""
    _force(monkeypatch, torchscript="corrupt")
    rc, err, entry = _export(cli, tmp_path, "--to", "onnx", "--opset", "17")
    assert rc == 1
    assert entry["status"] != "ok" and entry.get("path") is None
    assert "torchscript: validation: " in entry["error"] and "dynamo exporter needs opset >= 18" in entry["error"]
    assert f"{MODEL} onnx: FAILED" in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.onnx")) and not list((tmp_path / "out").glob(".*.onnx"))


@pytest.mark.slow
def test_coreml_torch_export_raises_trace_wins(cli, tmp_path, monkeypatch):
    calls = _force(monkeypatch, torch_export_raises=True)
    rc, err, entry = _export(cli, tmp_path, "--to", "coreml")
    assert rc == 0, err
    assert calls["torch.export"] >= 1
    assert entry["status"] == "ok" and entry["exporter"] == "coremltools (trace)"
    first, second = entry["attempts"]
    assert first["capture"] == "export" and "forced failure of torch.export" in first["error"]
    assert second == {"capture": "trace", "error": None}
    assert (tmp_path / "out" / entry["path"]).is_dir()


@pytest.mark.slow
def test_coreml_first_capture_wins_when_it_converts(cli, tmp_path, monkeypatch):
    """Without a forced failure the recipe's first capture (torch.export) converts and is the only attempt."""
    calls = _force(monkeypatch)
    rc, err, entry = _export(cli, tmp_path, "--to", "coreml")
    assert rc == 0, err
    assert calls["torch.export"] >= 1
    assert entry["exporter"] == "coremltools (export)" and entry["attempts"] == [{"capture": "export", "error": None}]
    assert entry["status"] == "ok"
