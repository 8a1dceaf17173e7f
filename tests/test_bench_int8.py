"""``hvit-bench --variants original int8`` end to end on the tiny plugin model: INT8 timed beside FP32 in the same
interleaved rounds, the entries' gate figures and ratios, the cache key following the calibration set, compare
keeping int8 and FP32 apart, one-line errors for a missing calibration folder; and benchmarks/int8_vs_fp32.py's
table, from a run that finds this file's INT8 and FP32 artifacts in the cache (the same images, checkpoint and
calibration size make the same keys), so the script's test does not quantize and gate them a second time."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from int8_helpers import make_images  # noqa: E402

from hvit_deploy.cli.bench import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = str(Path(__file__).parent / "bench_models.py")
FAST = ["--plugin", PLUGIN, "--profile", str(Path(__file__).parent / "data" / "bench_fast.yaml"), "--no-progress"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    import os

    d = tmp_path_factory.mktemp("hvit-cache-int8")
    old = os.environ.get("HVIT_CACHE_DIR")
    os.environ["HVIT_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("HVIT_CACHE_DIR", None)
    else:
        os.environ["HVIT_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """24 images (12 held out for the gate, 8 of the rest calibrate), made as benchmarks/int8_vs_fp32.py makes its
    own with --synthetic-images 24: the same files, so that script's run finds these INT8 artifacts cached."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from int8_vs_fp32 import synthetic_calibration

    return synthetic_calibration(tmp_path_factory.mktemp("calib"), 12)


def fitted_tiny(root: Path) -> Path:
    """bench_tiny with fixed weights and a head fitted to tell the two photos apart by a clear margin, so the
    gate's agreement figures mean something (random weights give near-tied logits, and a new draw per process)."""
    import torch

    import bench_models  # noqa: F401  (registers bench_tiny)
    from int8_helpers import fitted_model

    model = fitted_model("bench_tiny", 64, make_images(root / "fit", 6, seed=1), seed=0)
    torch.save(model.state_dict(), root / "tiny.pth")
    return root / "tiny.pth"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return fitted_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory, cache_dir, calib, tiny_ckpt):
    out = tmp_path_factory.mktemp("run") / "results.json"
    code = main(["--models", "bench_tiny", "--backends", "torch", "onnxruntime", "openvino", "--variants",
                 "original", "int8", "--calibration", str(calib), "--calibration-size", "8", "--iters", "12",
                 "--rounds", "2", "--checkpoint", str(tiny_ckpt), "--out", str(out), *FAST])
    # one worker process per entry (--processes 2 doubled the worker starts; test_bench_cli's paired run covers it)
    return code, json.loads(out.read_text())


def _by(doc):
    return {(e["backend"], e["variant"]): e for e in doc["results"]}


def test_int8_entries_beside_fp32(int8_run, calib):
    code, doc = int8_run
    assert code == 0
    by = _by(doc)
    assert set(by) == {(b, v) for b in ("torch", "onnxruntime", "openvino") for v in ("original", "int8")}
    torch8 = by[("torch", "int8")]
    assert torch8["status"] == "skipped" and "no INT8 form" in torch8["reason"]
    assert doc["settings"]["calibration"] == str(calib.resolve()) and doc["settings"]["calibration_size"] == 8
    for b in ("onnxruntime", "openvino"):
        e, fp = by[(b, "int8")], by[(b, "original")]
        assert e["status"] == fp["status"] == "ok"
        assert e["artifact_precision"] == "int8" and fp["artifact_precision"] == "fp32"
        assert e["compute_precision"] == fp["compute_precision"] == "fp32"   # the session computes in fp32
        assert "precision" not in e                                          # schema_version 1's key, migrated
        assert e["iterations"] == fp["iterations"] == 12 and len(e["round_medians_ms"]) == 2
        assert e["rounds"] == fp["rounds"] == 2 and e["processes"] == fp["processes"] == 1   # the same rounds
        assert "round_process" not in e and "round_process" not in fp   # recorded only for several processes
        assert e["fp32_variant"] == "original"   # bench_tiny has no recipe: quantized as written
        art = e["artifact"]
        assert art["path"].endswith("-int8" + (".onnx" if b == "onnxruntime" else ".xml"))
        assert "-int8-" in Path(art["path"]).parent.name and art["key"] != fp["artifact"]["key"]
        q = art["quantization"]
        fig = q["gate"]["final"]
        assert q["gate"]["passed"] is True and fig["finite"] is True and fig["images"] == 12
        assert fig["top1_agreement_within_tie"] >= q["thresholds"]["min_top1_agreement"]   # what the gate judged
        assert fig["top1_agreement"] <= fig["top1_agreement_within_tie"]
        assert fig["mean_cosine"] >= q["thresholds"]["min_mean_cosine"]
        # the gate's figures are the int8 artifact's validation, kept by name (not by a fallback)
        val = art["validation"]
        assert val["mean_cosine"] == fig["mean_cosine"] and val["min_cosine"] == fig["min_cosine"]
        assert val["top1_agreement_within_tie"] == fig["top1_agreement_within_tie"] and val["images"] == 12
        assert "min_cosine" in fp["artifact"]["validation"] and "top1" in fp["artifact"]["validation"]
        assert q["calibration"]["size"] == 8 and q["held_out"]["size"] == 12
        assert isinstance(q["layers_in_fp"], list)
        assert 0 < q["size_ratio_vs_fp32"] < 1 and art["size_bytes"] < fp["artifact"]["size_bytes"]
        s = e["speedup_vs_fp32"]
        assert s["reference"] == f"{b}/original" and s["ci"][0] <= s["speedup"] <= s["ci"][1] and s["speedup"] > 0
        assert e["speedup_vs_torch"]["reference"] == "torch/original"
        assert "speedup_vs_fp32" not in fp and "speedup_vs_original" not in e
        assert e["speedup_vs_best_float"] == s and "speedup_vs_best_float" not in fp   # FP32 is the only float form


def test_cache_key_follows_the_calibration_set(int8_run, calib, tmp_path, cache_dir, tiny_ckpt, monkeypatch):
    from hvit_deploy.bench import artifacts, plugins

    _, doc = int8_run
    # the key covers the --plugin files; the run's export process loaded only PLUGIN (this test process may have
    # loaded others for earlier tests)
    monkeypatch.setattr(plugins, "loaded_files", [str(Path(PLUGIN).resolve())])
    key_run = _by(doc)[("onnxruntime", "int8")]["artifact"]["key"]

    def key(folder, size=8):
        q = artifacts.quantization_fields("bench_tiny", "onnx", calibration=str(folder), calibration_size=size,
                                          eval_data=None)
        return artifacts.artifact_key("bench_tiny", "onnx", rewrite=False, rewrites=[], input_size=None,
                                      precision="int8", checkpoint=str(tiny_ckpt), quantization=q)[0]

    assert key(calib) == key_run
    assert key(calib, size=9) != key_run
    other = tmp_path / "calib2"
    shutil.copytree(calib, other)
    assert key(other) == key_run   # same images elsewhere: same set
    make_images(other / "more", 1, seed=99, labelled=False)
    assert key(other) != key_run
    # the original set's artifact is in the cache under its key; a run with the changed set re-exports
    hit = artifacts.lookup("bench_tiny", "onnx", False, key_run, "int8")
    assert hit and hit["quantization"]["calibration"]["size"] == 8
    out = tmp_path / "r.json"
    code = main(["--models", "bench_tiny", "--backends", "onnxruntime", "--variants", "int8", "--calibration",
                 str(other), "--calibration-size", "8", "--iters", "5", "--checkpoint", str(tiny_ckpt),
                 "--out", str(out), *FAST])
    assert code == 0
    art = json.loads(out.read_text())["results"][0]["artifact"]
    assert art["cached"] is False and art["key"] == key(other) != key_run
    assert artifacts.lookup("bench_tiny", "onnx", False, key(other), "int8")["key"] == art["key"]


def test_compare_keeps_int8_and_fp32_apart(int8_run):
    from hvit_deploy.bench.compare import compare_docs

    _, doc = int8_run
    cand = json.loads(json.dumps(doc))
    cand["results"] = [e for e in cand["results"] if e["variant"] != "int8"]
    rows = {(r.backend, r.form): r.verdict for r in compare_docs(doc, cand).rows}
    assert rows[("onnxruntime", "int8")] == rows[("openvino", "int8")] == "missing"
    assert rows[("onnxruntime", "original")] == rows[("openvino", "original")] == "unchanged"
    same = {(r.backend, r.form): r.verdict for r in compare_docs(doc, doc).rows}
    assert same[("onnxruntime", "int8")] == "unchanged" and ("onnxruntime", "original") in same


@pytest.mark.parametrize("extra, message", [
    (["--variants", "int8"], "--variants int8 on onnxruntime needs calibration images: --calibration DIR"),
    (["--variants", "int8", "--calibration", "/nonexistent/calib"], "calibration folder not found"),
    (["--variants", "original", "--calibration", "."], "--calibration goes with --variants ... int8"),
    (["--variants", "int4"], "invalid choice: 'int4'"),
])
def test_bad_int8_input(capsys, tmp_path, extra, message):
    try:
        code = main(["--models", "bench_tiny", "--backends", "onnxruntime", "--out", str(tmp_path / "r.json"),
                     *extra, *FAST])
    except SystemExit as e:  # argparse's own refusal (exit 2, one line)
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r.json").exists()


def test_validation_figures_keep_gate_and_export_figures_by_name():
    """bench/artifacts.py keeps the figures of both checks by name: the FP32 export validation's
    (hvit_deploy.metrics) and the INT8 gate's (hvit_deploy.quantize.gate), and nothing else."""
    import numpy as np

    from hvit_deploy import metrics
    from hvit_deploy.bench.artifacts import validation_figures
    from hvit_deploy.quantize.gate import gate_figures

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((6, 10)).astype(np.float32)
    out = ref + 0.01 * rng.standard_normal((6, 10)).astype(np.float32)
    gate = gate_figures(ref, out, labels=[0, 1, 2, 3, 4, 5], tie_margin=0.01)
    kept = validation_figures({**gate, "tries": [1, 2], "attempts": []})
    assert kept == gate   # every gate figure, and not what is not a figure
    fp32 = metrics.compare([(ref, out)]).as_dict()
    assert validation_figures({**fp32, "passed": True}) == {**fp32, "passed": True}


def test_int8_vs_fp32_prints_its_table(int8_run, tiny_ckpt, cache_dir, tmp_path):
    """One model, one thread count, a few runs: the table prints with both runtimes, the latency and size ratios,
    the gate figures and the layers kept in FP, and says its calibration images were made from the photos.
    The script makes the images ``calib`` holds and is given int8_run's checkpoint, calibration size and cache
    (HVIT_CACHE_DIR, set by ``cache_dir``): its FP32 and INT8 artifacts are cache hits, so what is checked here
    is the script, not a second quantization (test_int8_entries_beside_fp32 checks that one)."""
    import subprocess

    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "int8_vs_fp32.py"), "--models", "bench_tiny",
                        "--plugin", PLUGIN, "--profile", str(ROOT / "tests" / "data" / "bench_fast.yaml"),
                        "--threads", "1", "--iters", "6", "--rounds", "2", "--processes", "1",
                        "--synthetic-images", "24", "--calibration-size", "8", "--checkpoint", str(tiny_ckpt),
                        "--out-dir", str(tmp_path / "out"), "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model,backend,variant" not in r.stdout   # hvit-bench's own table goes to stderr
    assert "| model " in r.stdout and "fp32/int8 (95% CI)" in r.stdout and "top-1 agr" in r.stdout
    assert "made from the two shipped photos" in r.stdout
    rows = json.loads(r.stdout[r.stdout.index("\n[") + 1:])
    assert sorted(x["runtime"] for x in rows) == ["onnxruntime", "openvino"]
    for x in rows:
        assert x["model"] == "bench_tiny" and x["threads"] == 1 and x["rounds"] == 2 and x["processes"] == 1
        ratio = float(x["fp32/int8 (95% CI)"].split()[0])
        assert ratio > 0 and float(x["fp32 ms"]) > 0 and float(x["int8 ms"]) > 0
        assert 0 < float(x["size ratio"]) < 1 and float(x["cosine"]) >= 0.99
        gate_top1, strict = x["top-1 agr (strict)"].split()   # the gate's figure, the strict one in brackets
        assert float(gate_top1) >= 0.99 and float(strict.strip("()")) <= float(gate_top1)
    doc = json.loads((tmp_path / "out" / "results-t1.json").read_text())
    assert len(list((tmp_path / "out" / "calibration").glob("*.png"))) == 24
    # the shared exports: every artifact of the script's run was found in int8_run's cache, under int8_run's key
    ran = {(e["backend"], e["variant"]): e["artifact"] for e in _by(int8_run[1]).values() if e.get("artifact")}
    got = {(e["backend"], e["variant"]): e["artifact"] for e in doc["results"] if e.get("artifact")}
    assert sorted(got) == [(b, v) for b in ("onnxruntime", "openvino") for v in ("int8", "original")]
    assert all(a["cached"] is True and a["key"] == ran[k]["key"] for k, a in got.items())
