"""ExecuTorch (.pte) and LiteRT (.tflite): export with validation on their own runtimes, metadata read back, the
delegated share, threads honoured, hvit-bench timing, a graph a converter cannot take, and the one-line install
hint where the mobile extra is missing. Runs on the tiny model of tests/bench_models.py (64x64)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hvit_deploy.formats import _mobile

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).parent / "bench_models.py"
NEEDS_EXTRA = pytest.mark.skipif(bool(_mobile.missing("executorch") or _mobile.missing("litert")),
                                 reason=f"the mobile extra is not installed ({_mobile.INSTALL_HINT})")
BLOCK = ("import importlib.abc, sys\n"
         "class Block(importlib.abc.MetaPathFinder):\n"
         "    def find_spec(self, name, path=None, target=None):\n"
         "        if name.split('.')[0] in ('executorch', 'litert_torch', 'ai_edge_litert'):\n"
         "            raise ModuleNotFoundError(name)\n"
         "sys.meta_path.insert(0, Block())\n")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import bench_models  # noqa: F401 - registers bench_tiny
    from hvit_deploy.export import ExportSession, update_manifest
    from hvit_deploy.recipes import load_recipe

    out = tmp_path_factory.mktemp("mobile")
    session = ExportSession("bench_tiny", recipe=load_recipe("efficientmod"))  # its tolerances; no rewrites
    results = {fmt: session.export(fmt, out, rewrite=False) for fmt in ("executorch", "litert")}
    update_manifest(out, [r.entry for r in results.values()])  # as hvit-export records them
    return session, results, out


@NEEDS_EXTRA
@pytest.mark.parametrize("fmt", ["executorch", "litert"])
def test_export_validates_and_carries_metadata(exported, fmt):
    from hvit_deploy.formats.metadata import read_metadata

    session, results, out = exported
    r = results[fmt]
    assert r.ok, r.error
    v = r.entry["validation"]
    assert v["max_abs"] < 1e-4 and v["min_cosine"] > 0.99999 and v["top1"] == 1.0
    assert v["inputs_used"] and len(v["inputs_used"]) >= 2  # seeded inputs and a real photo
    meta = read_metadata(r.path)
    assert meta == session.metadata(fmt) and json.loads(meta["input_shape"]) == [1, 3, 64, 64]
    assert meta["layout"] == "NCHW"
    assert (out / r.entry["path"]).is_file() and not list(out.glob(".*"))  # no temporary left behind


@NEEDS_EXTRA
def test_executorch_side_file_and_delegation(exported):
    _, results, out = exported
    e = results["executorch"].entry
    assert e["files"] == [e["path"], e["path"] + ".json"] and (out / (e["path"] + ".json")).is_file()
    d = e["delegation"]
    assert d["delegated_ops"] > 0 and 0 < d["share"] <= 1
    assert d["share"] == round(d["delegated_ops"] / (d["delegated_ops"] + d["undelegated_ops"]), 4)
    text = (out / "manifest.json").read_text()
    assert '"format": "executorch"' in text and '"delegated_ops": %d' % d["delegated_ops"] in text


@NEEDS_EXTRA
@pytest.mark.parametrize("fmt,key", [("executorch", "threadpool_threads"), ("litert", "num_threads")])
def test_threads_honoured_and_read_back(exported, fmt, key):
    from hvit_deploy.runtimes import get_runtime, open_runtime

    session, results, _ = exported
    rt = open_runtime(fmt, {"artifact": str(results[fmt].path), "threads": 2})
    try:
        assert rt.readback[key] == 2 and get_runtime(fmt).thread_notes(2, rt.readback) == []
        rt.prepare()
        assert rt.input_shape == [1, 3, 64, 64]  # NCHW, as the metadata says
        rt.call()
        x = session.inputs[0][1]
        np.testing.assert_allclose(rt.predict([x])[0], session.references[0], atol=1e-4)
        with pytest.raises(Exception):  # a wrong-shaped input is refused, not run
            rt.predict([np.zeros((1, 3, 32, 32), np.float32)])
    finally:
        rt.close()


class _FFT(torch.nn.Module):
    def forward(self, x):
        return torch.fft.rfft2(x).abs().mean((2, 3))


@NEEDS_EXTRA
@pytest.mark.parametrize("fmt", ["executorch", "litert"])
def test_a_graph_the_converter_cannot_take_names_the_op(tmp_path, fmt):
    from hvit_deploy.errors import ExportError
    from hvit_deploy.formats import ExportJob, get_format

    job = ExportJob(model=_FFT(), example=torch.randn(1, 3, 16, 16), path=tmp_path / f"fft{get_format(fmt).suffix}",
                    recipe=None, validate=None, precision="fp32", options={"metadata": {}})
    with pytest.raises(ExportError) as e:
        get_format(fmt).export(job)
    msg = str(e.value)
    assert "\n" not in msg and "aten" in msg and "conversion failed" in msg
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_native_converter_chatter_is_captured_not_printed(capfd):
    """LiteRT's MLIR converter and interpreter write to descriptor 2 from C++, past ``sys.stderr``: the converters'
    capture takes those lines too (shown only when something fails), and gives the descriptor back afterwards."""
    from hvit_deploy.formats.quiet import captured

    with captured(native=True) as buf:
        os.write(2, b"I0000 status_scoped_diagnostic_handler.cc:61] warning: Missing quantization parameter\n")
        print("python-level", file=sys.stderr)
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "Missing quantization parameter" in buf.getvalue() and "python-level" in buf.getvalue()
    assert "Missing quantization parameter" not in err and "python-level" not in err and "after" in err


@NEEDS_EXTRA
def test_hvit_bench_times_both(tmp_path, monkeypatch):
    from hvit_deploy.cli.bench import main

    monkeypatch.setenv("HVIT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    code = main(["--models", "bench_tiny", "--backends", "onnxruntime", "executorch", "litert", "--variants", "original",
                 "--iters", "20", "--threads", "2", "--out", str(out), "--plugin", str(PLUGIN),
                 "--profile", str(Path(__file__).parent / "data" / "bench_fast.yaml"), "--no-progress"])
    doc = json.loads(out.read_text())
    assert code == 0, doc
    by = {e["backend"]: e for e in doc["results"]}
    assert set(by) == {"onnxruntime", "executorch", "litert"}
    for e in by.values():
        assert e["status"] == "ok" and e["iterations"] == 20 and e["median_ms"] > 0 and e["threads"] == 2
        assert not [n for n in e.get("notes", []) if "threads" in n and "not the" in n]
    assert by["executorch"]["threads_readback"]["threadpool_threads"] == 2
    assert by["litert"]["threads_readback"]["num_threads"] == 2
    assert by["executorch"]["artifact"]["delegation"]["share"] > 0
    # benchmarks/mobile_vs_desktop.py's table from this same run: each runtime against ONNX Runtime, with an interval
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from mobile_vs_desktop import rows_of

    rows = {r["runtime"]: r for r in rows_of(doc)}
    assert list(rows) == ["onnxruntime", "executorch", "litert"] and rows["onnxruntime"]["x onnxruntime (95% CI)"] \
        == "1 (baseline)"
    for rt in ("executorch", "litert"):
        ratio, ci = rows[rt]["x onnxruntime (95% CI)"].split(" ", 1)
        lo, hi = (float(v) for v in ci.strip("()").split("-"))
        assert float(ratio) > 0 and 0 < lo <= hi and rows[rt]["threads"] == 2
        assert "=2" in rows[rt]["threads read back"]
    assert rows["executorch"]["delegated"].endswith("%")


def test_without_the_extra_one_line_says_how_to_install_it(tmp_path):
    """The extra's imports made to fail in a fresh interpreter: the package, the format table and the runtime
    registry still load; --to executorch is refused in one line (exit 2) before any model is built; --to all
    leaves the two formats out with a note."""
    code = BLOCK + f"""
import contextlib, io, json
from hvit_deploy.cli.export import _note_skipped_by_all, main
from hvit_deploy.formats import parse_formats
from hvit_deploy.runtimes import get_runtime, runtime_names
err, notes = io.StringIO(), io.StringIO()
with contextlib.redirect_stderr(err):
    rc = main(['bench_tiny', '--plugin', {str(PLUGIN)!r}, '--to', 'executorch', '--out', {str(tmp_path)!r}])
with contextlib.redirect_stderr(notes):
    fmts = parse_formats(['all'])
    _note_skipped_by_all(['all'])
print(json.dumps({{"rc": rc, "err": err.getvalue(), "all": fmts, "notes": notes.getvalue(),
                  "runtimes": list(runtime_names()), "et": get_runtime("executorch").availability()}}))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    lines = [ln for ln in got["err"].splitlines() if ln.strip()]
    assert got["rc"] == 2 and len(lines) == 1, got["err"]
    assert lines[0].startswith("hvit-export: error:") and 'pip install "hvit-deploy[mobile]"' in lines[0]
    assert not (tmp_path / "manifest.json").exists()
    assert got["all"] == ["onnx", "openvino", "coreml"]
    notes = [ln for ln in got["notes"].splitlines() if "--to all skips" in ln]
    assert len(notes) == 2 and all("hvit-deploy[mobile]" in n for n in notes)
    assert {"executorch", "litert"} <= set(got["runtimes"]) and "not installed" in got["et"]


def test_int8_needs_calibration_images_in_one_line():
    from hvit_deploy.quantize.stage import QuantizationError, check_request

    for fmt in ("executorch", "litert"):
        with pytest.raises(QuantizationError, match=f"int8 for {fmt} needs calibration images: --calibration DIR"):
            check_request(fmt, "int8", None)
        check_request(fmt, "int8", "calibration_dir")  # accepted


@pytest.fixture(scope="module")
def int8(exported, tmp_path_factory):
    """INT8 .pte and .tflite of bench_tiny through PT2E, the gate and the manifest, as hvit-export makes them."""
    from int8_helpers import make_images

    from hvit_deploy.export import update_manifest

    session, _, _ = exported
    calib = tmp_path_factory.mktemp("calib")
    make_images(calib, 6, seed=3)  # 12 images: 6 to calibrate, 6 held out for the gate
    out = tmp_path_factory.mktemp("int8")
    results = {fmt: session.export(fmt, out, rewrite=False, precision="int8", calibration=calib)
               for fmt in ("executorch", "litert")}
    update_manifest(out, [r.entry for r in results.values()])
    return session, results, out


@NEEDS_EXTRA
@pytest.mark.parametrize("fmt", ["executorch", "litert"])
def test_int8_through_pt2e_passes_the_gate_with_the_manifest_fields(int8, fmt):
    from hvit_deploy.export.manifest import load_manifest
    from hvit_deploy.formats.metadata import read_metadata
    from hvit_deploy.runtimes import run_artifact

    session, results, out = int8
    r = results[fmt]
    assert r.ok, r.error
    e = r.entry
    assert e["precision"] == "int8" and e["artifact_precision"] == "int8" and e["path"].endswith("-int8" + (
        ".pte" if fmt == "executorch" else ".tflite"))
    q = e["quantization"]
    assert q["calibration"]["size"] == 6 and q["held_out"]["size"] == 6 and q["settings"]["subset_size"] == 6
    assert q["gate"]["passed"] and q["layers_in_fp"] == [] and q["settings"]["nodes_in_fp"] == []
    fin = q["gate"]["final"]
    assert fin["images"] == 6 and fin["top1_agreement_within_tie"] == 1.0 and fin["mean_cosine"] > 0.99
    assert "prepare_pt2e" in q["settings"]["flow"] and q["settings"]["per_channel_weights"] is True
    assert 0 < e["size_ratio_vs_fp32"] < 0.9   # INT8 weights
    assert read_metadata(out / e["path"]) == session.metadata(fmt)   # the FP32 artifact's table, carried over
    # the artifact runs on its runtime: float in, float out, close to eager FP32
    x = session.inputs[0][1]
    got = run_artifact(fmt, out / e["path"], [x])[0]
    ref = session.references[0]
    assert got.shape == ref.shape and got.dtype == np.float32
    assert float(np.dot(got.ravel(), ref.ravel()) / np.linalg.norm(got) / np.linalg.norm(ref)) > 0.99
    if fmt == "executorch":  # the INT8 program's own delegated share, and its metadata side file
        d = e["delegation"]
        assert d == q["settings"]["delegation"] and d["delegated_ops"] > 0 and 0 < d["share"] <= 1
        assert e["files"] == [e["path"], e["path"] + ".json"]
    else:  # integer kernels, with the INT8 input the runtime quantizes for
        assert q["settings"]["io"]["input"]["dtype"] in ("int8", "float32")
        assert q["settings"]["op_types"].get("FULLY_CONNECTED", 0) > 0
    entry = [a for a in load_manifest(out / "manifest.json").artifacts if a.format == fmt][0]
    assert entry.quantization["gate"]["passed"] and not list(out.glob(".hvit-int8-*"))


@NEEDS_EXTRA
def test_int8_gate_failure_goes_to_the_per_layer_fallback(exported, int8):
    """A gate no INT8 artifact can pass: the fallback re-quantizes with the worst layers' nodes left out of the
    quantizer's annotation (the figures change), then reports the failure in one line; nothing is left behind."""
    from hvit_deploy import quantize
    from hvit_deploy.quantize import pt2e_int8

    session, fp32, out0 = exported
    _, results, _ = int8
    q = session.recipe.quantization.model_copy(deep=True)
    q.gate.min_mean_cosine = 0.9999999
    q.fallback.max_layers, q.fallback.max_tries, q.fallback.group_tries = 1, 1, 0   # one fallback try: one more conversion
    from hvit_deploy.preprocess import preprocessing_for

    folder = results["litert"].entry["quantization"]["calibration"]["folder"]
    sets = quantize.stage.load_sets(folder, preprocess=preprocessing_for(session.spec, session.input_size), options=q)
    model = session.reference_model   # what the FP32 artifact was exported from (rewrite=False)
    gate = quantize.GateInputs(calibration=sets[0], held_out=sets[1], batch=1, runtime="litert",
                               reference_logits=quantize.eager_logits(model, sets[1].arrays, 1), module=lambda: model)
    out = out0 / "fallback"
    out.mkdir()
    r = quantize.convert(fp32["litert"], "int8", out_dir=out, target_name="tiny-int8.tflite", options=q, gate=gate)
    assert not r.ok and "\n" not in r.error and "INT8 accuracy gate failed after keeping" in r.error
    info = r.entry["quantization"]
    tries = info["gate"]["tries"]
    assert len(tries) == 2 and tries[0]["layers_in_fp"] == [] and len(tries[-1]["layers_in_fp"]) == 1
    nodes = pt2e_int8.graph_nodes(pt2e_int8.export_graph(gate.module(), torch.from_numpy(sets[0].arrays[:1])))
    for t in tries[1:]:
        assert t["nodes_in_fp"] == [n for layer in t["layers_in_fp"] for n in pt2e_int8.nodes_for(layer, nodes)]
        assert t["nodes_in_fp"] and t["figures"]["mean_cosine"] != tries[0]["figures"]["mean_cosine"]
    assert info["settings"]["nodes_in_fp"] == tries[-1]["nodes_in_fp"] and info["layers_in_fp"]
    assert list(out.iterdir()) == []  # a failed gate leaves nothing that looks like a good artifact



def _fc_input_types(tflite) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tflite))
    types = {t["index"]: np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    return [types[op["inputs"][0]] for op in it._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]


@NEEDS_EXTRA
def test_recipe_modules_in_fp_stay_float_from_the_first_try(exported, int8):
    """The recipe's ``pt2e_modules_in_fp`` for the format (ACmix keeps its q/k/v convs float on LiteRT): those
    modules' nodes are left out of the annotation on the first try; the fallback's ``nodes_in_fp`` stays its own,
    and another format's entry does not apply."""
    from hvit_deploy import quantize
    from hvit_deploy.preprocess import preprocessing_for
    from hvit_deploy.quantize import pt2e_int8

    session, fp32, out0 = exported
    _, results, out_int8 = int8
    model = session.reference_model
    q = session.recipe.quantization.model_copy(deep=True)
    folder = results["litert"].entry["quantization"]["calibration"]["folder"]
    sets = quantize.stage.load_sets(folder, preprocess=preprocessing_for(session.spec, session.input_size), options=q)
    nodes = pt2e_int8.graph_nodes(pt2e_int8.export_graph(model, torch.from_numpy(sets[0].arrays[:1])))
    fc = sorted({mod for _, op, mod in nodes if op == "linear"})
    assert fc and all(fc)
    q.pt2e_modules_in_fp = {"litert": [re.escape(m) for m in fc], "executorch": [".*"]}
    gate = quantize.GateInputs(calibration=sets[0], held_out=sets[1], batch=1, runtime="litert",
                               reference_logits=quantize.eager_logits(model, sets[1].arrays, 1), module=lambda: model)
    out = out0 / "modules_in_fp"
    out.mkdir()
    r = quantize.convert(fp32["litert"], "int8", out_dir=out, target_name="tiny-int8.tflite", options=q, gate=gate)
    assert r.ok, r.error
    s = r.entry["quantization"]["settings"]
    n_linear = sum(op == "linear" for _, op, _ in nodes)
    assert s["recipe_nodes_in_fp"]["nodes"] == [n for n, op, _ in nodes if op == "linear"]
    assert len(s["recipe_nodes_in_fp"]["nodes"]) == n_linear and s["nodes_in_fp"] == []
    # the linear layers take float in this file and INT8 in the fully quantized one
    assert _fc_input_types(out / "tiny-int8.tflite") == ["float32"] * n_linear
    assert set(_fc_input_types(out_int8 / results["litert"].entry["path"])) == {"int8"}


def test_recipe_modules_in_fp_must_be_regular_expressions():
    from hvit_deploy.recipes import QuantizationOptions

    assert QuantizationOptions(pt2e_modules_in_fp={"litert": [r"layer\d+\.conv1"]}).pt2e_modules_in_fp
    with pytest.raises(ValueError, match=r"not a regular expression: '\('"):
        QuantizationOptions(pt2e_modules_in_fp={"litert": ["("]})
    with pytest.raises(ValueError):
        QuantizationOptions(pt2e_modules_in_fp={"coreml": ["x"]})

def test_heavy_ops_are_told_from_cheap_ones():
    """The names get_delegation_info gives (aten_<op>_<overload>), as ACmix's undelegated softmax came out."""
    for op in ("aten__softmax_default", "aten_native_layer_norm_default", "aten_convolution_default",
               "aten_bmm_default", "aten_linear_default", "aten_addmm_default"):
        assert _mobile.is_heavy(op), op
    for op in ("aten_add_tensor", "aten_expand_copy_default", "aten_mean_dim", "aten_squeeze_copy_dims",
               "aten_sum_dim_int_list", "getitem"):
        assert not _mobile.is_heavy(op), op
