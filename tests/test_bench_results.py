"""Results documents: tables in every format, speed-up columns, and what load_results refuses."""
from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from hvit_deploy.bench.results import add_speedups, exit_code, format_table, load_results
from hvit_deploy.bench.schema import check
from hvit_deploy.errors import HvitError

FIXTURE = Path(__file__).parent / "data" / "bench_tiny_cpu.json"


@pytest.fixture()
def doc():
    return json.loads(FIXTURE.read_text())


def test_formats(doc):
    md = format_table(doc, "md")
    assert md.splitlines()[0].startswith("| model ") and "| bench_tiny | onnxruntime |" in md
    table = format_table(doc, "table")
    assert "median ms" in table and "bench_tiny" in table
    rows = list(csv.DictReader(io.StringIO(format_table(doc, "csv"))))
    assert [r["backend"] for r in rows] == ["torch", "onnxruntime", "openvino"]
    assert float(rows[1]["median_ms"]) == doc["results"][1]["median_ms"]
    slim = json.loads(format_table(doc, "json"))
    assert "samples_ms" not in slim["results"][0] and slim["results"][0]["median_ms"] == doc["results"][0]["median_ms"]


def test_speedups_are_same_run_ratios(doc):
    d = copy.deepcopy(doc)
    orig = copy.deepcopy(d["results"][1])
    orig["variant"] = "original"
    orig["samples_ms"] = [v * 1.5 for v in orig["samples_ms"]]
    orig["median_ms"] = float(np.median(orig["samples_ms"]))
    d["results"][1]["variant"] = "rewritten"
    d["results"].append(orig)
    for e in d["results"]:
        e.pop("speedup_vs_torch", None)
    entries = check(d).results
    add_speedups(entries)
    by = {(e.backend, e.form): e.to_json() for e in entries}
    s = by[("onnxruntime", "rewritten")]["speedup_vs_original"]
    assert s["reference"] == "onnxruntime/original" and s["speedup"] == pytest.approx(1.5, rel=1e-3)
    assert s["ci"][0] <= s["speedup"] <= s["ci"][1]
    assert "speedup_vs_torch" in by[("openvino", "original")]
    assert "speedup_vs_torch" not in by[("onnxruntime", "rewritten")]  # no torch/rewritten entry to compare with
    assert "speedup_vs_torch" not in by[("torch", "original")]


def test_exit_code(doc):
    assert exit_code(doc) == 0
    d = copy.deepcopy(doc)
    d["results"].append({"model": "x", "backend": "coreml", "status": "skipped", "reason": "macOS only"})
    assert exit_code(d) == 0
    d["results"].append({"model": "x", "backend": "torch", "status": "error", "error": "boom"})
    assert exit_code(d) == 1
    d["status"] = "interrupted"
    assert exit_code(d) == 130


def test_load_results_refuses_unusable_files(tmp_path, doc):
    bad = copy.deepcopy(doc)
    bad["results"][0]["samples_ms"] = []
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(HvitError, match=r"results\[0\] \(bench_tiny/torch\) has no usable samples_ms"):
        load_results(p)
    p.write_text(json.dumps({"schema": "asv/2", "results": []}))
    with pytest.raises(HvitError, match="not an hvit-bench results file"):
        load_results(p)


def test_table_prints_each_entrys_compute_precision(doc):
    """The compute precision (what the runtime session computed in) is its own column, apart from the artifact's
    precision, which an old file's ``precision`` key migrates to."""
    d = copy.deepcopy(doc)
    for e, cp in zip(d["results"], ("fp32", "fp32", "bf16")):
        e["compute_precision"] = cp
    typed = check(d)
    assert [e.artifact_precision for e in typed.results] == [e.get("precision") for e in doc["results"]]
    table = format_table(typed, "table")
    header = table.splitlines()[0].split()
    assert "compute" in header
    row = next(line for line in table.splitlines() if " openvino " in f" {line} ")
    assert "bf16" in row.split()
    rows = list(csv.DictReader(io.StringIO(format_table(typed, "csv"))))
    assert [r["compute_precision"] for r in rows] == ["fp32", "fp32", "bf16"]
    assert "compute" not in format_table(doc, "table").splitlines()[0].split()  # an old file: nothing recorded


def test_int8_is_also_compared_with_the_fastest_float_form_of_its_runtime(doc):
    """An int8 entry's speedup_vs_best_float is against the fastest non-INT8 form of the same runtime in the run:
    its FP32 form when that is all there is (then the same figure as speedup_vs_fp32), a bf16 entry when the
    runtime computed faster in bf16; the table and the CSV carry it."""
    d = copy.deepcopy(doc)
    fp32 = next(e for e in d["results"] if e["backend"] == "openvino")
    for e in d["results"]:
        e.pop("speedup_vs_torch", None)

    def form(variant, factor, **extra):
        e = copy.deepcopy(fp32)
        e.update(variant=variant, samples_ms=[v * factor for v in fp32["samples_ms"]], **extra)
        e["median_ms"] = float(np.median(e["samples_ms"]))
        return e

    int8 = form("int8", 0.5, fp32_variant=fp32["variant"])
    d["results"].append(int8)
    entries = check(d).results
    add_speedups(entries)
    e = {x.form: x for x in entries if x.backend == "openvino"}["int8"]
    assert e.speedup_vs_best_float == e.speedup_vs_fp32 and e.speedup_vs_fp32["speedup"] == pytest.approx(2, rel=1e-3)
    d["results"].append(form("bf16", 0.625, fp32_variant=fp32["variant"], compute_precision="bf16"))
    d2 = check(d)
    add_speedups(d2.results)
    e = {x.form: x for x in d2.results if x.backend == "openvino"}["int8"]
    assert e.speedup_vs_fp32["speedup"] == pytest.approx(2, rel=1e-3)
    assert e.speedup_vs_best_float["reference"] == "openvino/bf16"
    assert e.speedup_vs_best_float["speedup"] == pytest.approx(1.25, rel=1e-3)
    lo, hi = e.speedup_vs_best_float["ci"]
    assert lo <= 1.25 <= hi
    table = format_table(d2.model_dump(mode="json", by_alias=True), "table")
    assert "; × bf16 1.25" in table
    rows = {(r["backend"], r["variant"]): r for r in csv.DictReader(io.StringIO(format_table(
        d2.model_dump(mode="json", by_alias=True), "csv")))}
    assert float(rows[("openvino", "int8")]["speedup_vs_best_float"]) == pytest.approx(1.25, rel=1e-3)
    assert rows[("openvino", "bf16")]["speedup_vs_best_float"] == ""
