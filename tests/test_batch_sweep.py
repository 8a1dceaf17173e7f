"""``hvit-bench --batch 1 2 4``: one entry per (model, runtime, form, batch), the batch recorded and read back,
throughput beside latency, older results files read as batch 1, ``compare`` matching by batch, and a batch a
model cannot take failing only its own entry. Real runtimes on the tiny test models (tests/bench_models.py);
the GPU sweep skips without CUDA."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hvit_deploy.bench.compare import compare_docs
from hvit_deploy.bench.results import format_table, load_results
from hvit_deploy.bench.schema import ResultsDoc, check
from hvit_deploy.cli.bench import main

HERE = Path(__file__).resolve().parent
FAST = ["--plugin", str(HERE / "bench_models.py"), "--profile", str(HERE / "data" / "bench_fast.yaml"), "--no-progress"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, monkeypatch_module):
    """bench_tiny on torch and onnxruntime at batches 1, 2 and 4 (as written: the plugin family has no recipe)."""
    d = tmp_path_factory.mktemp("sweep")
    monkeypatch_module.setenv("HVIT_CACHE_DIR", str(d / "cache"))
    out = d / "sweep.json"
    code = main(["--models", "bench_tiny", "--backends", "torch", "onnxruntime", "--variants", "original",
                 "--batch", "1", "2", "4", "--iters", "20", "--format", "md", "--out", str(out), *FAST])
    return code, out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_one_entry_per_batch_with_throughput(sweep, capsys):
    code, out = sweep
    assert code == 0
    doc = load_results(out)
    assert doc.settings["batch"] == [1, 2, 4]
    got = {(e.backend, e.batch): e for e in doc.results}
    assert sorted(got) == [("onnxruntime", b) for b in (1, 2, 4)] + [("torch", b) for b in (1, 2, 4)]
    for (backend, b), e in got.items():
        assert e.status == "ok" and e.batch_size == b
        assert e.input_shape == [b, 3, 64, 64]  # what the worker's session read back
        assert e.images_per_s == pytest.approx(b * 1e3 / e.median_ms, rel=1e-3)
        assert e.median_ms == np.median(e.samples_ms)
    # the artifact runtime times the static export at batch 1 and one dynamic-batch export above it
    ort = [got["onnxruntime", b].artifact for b in (1, 2, 4)]
    assert "dynamic_batch" not in ort[0] and ort[1]["dynamic_batch"] is True and ort[1]["path"] == ort[2]["path"]
    assert ort[0]["path"] != ort[1]["path"] and ort[1]["path"].endswith(".onnx")
    raw = json.loads(out.read_text())
    assert raw["schema_version"] == 3 and all("images_per_s" in e and "batch_size" in e for e in raw["results"])


def test_table_shows_batch_and_images_per_s_only_for_a_sweep(sweep):
    doc = load_results(sweep[1])
    header = [c.strip() for c in format_table(doc, "md").splitlines()[0].split("|")]
    assert header.index("batch") == header.index("variant") + 1 and "images/s" in header
    csv_lines = format_table(doc, "csv").splitlines()
    assert ",batch_size,images_per_s," in csv_lines[0]   # added after the older columns (later ones follow)
    rows = list(csv.DictReader(io.StringIO("\n".join(csv_lines))))
    assert rows[-1]["batch_size"] == "4" and float(rows[-1]["images_per_s"]) > 0
    one = ResultsDoc.model_validate({**doc.to_json(), "settings": {**doc.settings, "batch": [1]},
                                     "results": [e.to_json() for e in doc.results if e.batch == 1]})
    header = [c.strip() for c in format_table(one, "md").splitlines()[0].split("|")]
    assert "batch" not in header and "images/s" not in header and "median ms" in header


def test_old_results_without_batch_load_as_batch_1_and_compare_by_batch(sweep):
    doc = load_results(sweep[1])
    old = doc.to_json()
    old["schema_version"] = 2
    old["settings"].pop("batch")
    old["results"] = [{k: v for k, v in e.items() if k not in ("batch_size", "images_per_s")}
                      for e in old["results"] if e["batch_size"] == 1]
    base = check(old)
    assert base.schema_version == 3 and [e.batch for e in base.results] == [1, 1]
    assert {e.key for e in base.results} == {("bench_tiny", b, "original", 1) for b in ("torch", "onnxruntime")}
    cmp = compare_docs(base, doc, allow_env_diff=True)
    rows = {(r.backend, r.batch): r for r in cmp.rows}
    assert len(rows) == 6
    for backend in ("torch", "onnxruntime"):
        assert rows[backend, 1].verdict == "unchanged"  # matched with itself, read as batch 1
        assert rows[backend, 1].ratio == pytest.approx(1.0)
        assert rows[backend, 2].verdict == rows[backend, 4].verdict == "new"
    assert rows["torch", 4].label == "bench_tiny/torch/original/batch 4"
    assert cmp.to_dict()["rows"][0]["batch"] in (1, 2, 4)


def test_a_batch_the_model_cannot_take_fails_only_its_entry(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["--models", "bench_batch1", "--backends", "torch", "--variants", "original", "--batch", "1", "2",
                 "--iters", "10", "--out", str(out), *FAST])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "1 entry failed: bench_batch1/torch/original/batch 2" in err
    one, two = load_results(out).results
    assert (one.batch, one.status, two.batch, two.status) == (1, "ok", 2, "error")
    assert "takes one image per call, not 2" in two.error and "\n" not in two.error


def test_a_model_without_a_dynamic_batch_export_fails_its_request_only(tmp_path, monkeypatch):
    """The sweep's dynamic-batch export of a model that cannot run above batch 1 fails on its own, in one line,
    beside the static batch-1 export of the same request (what the runner records for batches above 1)."""
    from hvit_deploy.bench import plugins
    from hvit_deploy.bench.artifacts import export_many

    monkeypatch.setenv("HVIT_CACHE_DIR", str(tmp_path))
    plugins.load(plugins.normalise([str(HERE / "bench_models.py")]))
    static, dynamic = export_many("bench_batch1", [("onnx", False), ("onnx", False, {"dynamic_batch": True})],
                                  input_size=None, checkpoint=None)
    assert static["ok"] and static["info"]["input_shape"] == [1, 3, 64, 64] and "dynamic_batch" not in static["info"]
    assert not dynamic["ok"] and "bench_batch1 takes one image per call, not 4" in dynamic["error"]  # batch-4 check
    assert "\n" not in dynamic["error"]


def test_a_static_batch_artifact_refuses_another_batch(tmp_path):
    """A batch-1 ONNX file asked for batch 2 fails with one line, on both runtimes that read it, instead of
    silently timing batch 1."""
    from hvit_deploy.export import ExportSession
    from hvit_deploy.recipes import Recipe
    from hvit_deploy.runtimes import open_runtime
    from hvit_deploy.runtimes.base import StaticBatchError

    from hvit_deploy.bench import plugins

    plugins.load(plugins.normalise([str(HERE / "bench_models.py")]))  # registers bench_tiny

    r = ExportSession("bench_tiny", recipe=Recipe(family="bench_test"), validate=False).export(
        "onnx", tmp_path, rewrite=False)
    assert r.ok, r.error
    for name in ("onnxruntime", "openvino"):
        rt = open_runtime(name, {"artifact": str(r.path), "threads": 1, "input_shape": [2, 3, 64, 64]})
        with pytest.raises(StaticBatchError, match=r"takes batch 1 only \(a static batch axis\), not 2"):
            rt.prepare()
        rt.close()
        rt = open_runtime(name, {"artifact": str(r.path), "threads": 1, "input_shape": [1, 3, 64, 64]})
        rt.prepare()
        assert rt.input_shape == [1, 3, 64, 64]
        rt.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_capture_one_graph_per_batch(tmp_path):
    out = tmp_path / "r.json"
    assert main(["--models", "bench_tiny", "--backends", "torch-cuda-graphs", "torch-cuda-graphs-fp16",
                 "--variants", "original", "--batch", "1", "4", "--iters", "20", "--out", str(out), *FAST]) == 0
    for e in load_results(out).results:
        assert e.status == "ok" and e.input_shape == [e.batch, 3, 64, 64] and e.images_per_s > 0
