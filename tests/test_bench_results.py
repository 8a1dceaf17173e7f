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
    add_speedups(d["results"])
    by = {(e["backend"], e["variant"]): e for e in d["results"]}
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
