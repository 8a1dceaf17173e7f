"""Flags of ``hvit-export``, ``hvit-bench`` and ``hvit-bench compare`` that had no test of their own (see
docs/flags.md): each is checked for its effect on the files, the manifest or the results, not only accepted.
Exports use the tiny bench model (tests/bench_models.py, 64x64) or EfficientMod-xxs at 64 px."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hvit_deploy.cli.bench import main as bench_main
from hvit_deploy.cli.export import main as export_main

TESTS = Path(__file__).parent
PLUGIN = str(TESTS / "bench_models.py")
FAST = ["--plugin", PLUGIN, "--profile", str(TESTS / "data" / "bench_fast.yaml"), "--no-progress"]
FIXTURE = TESTS / "data" / "bench_tiny_cpu.json"


def _manifest(out: Path) -> list[dict]:
    return json.loads((out / "manifest.json").read_text())["artifacts"]


def _one_line(err: str, prog: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


# --- hvit-export -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_static_batch_opset_and_json(cli, tmp_path):
    """--batch 2 gives a static batch of 2 in both files, --opset 17 lands in the ONNX file (torchscript: dynamo
    needs 18), --json prints the manifest entries on stdout instead of the table."""
    rc, out, err = cli(export_main, "--plugin", PLUGIN, "bench_tiny", "--to", "onnx", "openvino", "--batch", "2",
                       "--opset", "17", "--json", "--out", tmp_path)
    assert rc == 0, err
    printed = json.loads(out)
    entries = {e["format"]: e for e in (printed if isinstance(printed, list) else printed["artifacts"])}
    assert entries.keys() == {"onnx", "openvino"}
    assert {e["format"]: e["path"] for e in _manifest(tmp_path)} == {k: v["path"] for k, v in entries.items()}
    import onnx

    m = onnx.load(str(tmp_path / entries["onnx"]["path"]))
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert entries["onnx"]["opset"] == 17 and entries["onnx"]["exporter"] == "torchscript"
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 64, 64]
    assert [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim] == [2, 10]
    import openvino as ov

    xml = ov.Core().read_model(str(tmp_path / entries["openvino"]["path"]))
    assert list(xml.inputs[0].get_shape()) == [2, 3, 64, 64]
    for e in entries.values():
        assert e["input_shape"] == [2, 3, 64, 64] and e["status"] == "ok" and e["validation"]["top1"] == 1.0


@pytest.mark.slow
def test_export_precision_fp16_openvino_and_onnx(cli, tmp_path):
    """--precision fp16: OpenVINO stores its weights in f16 (half the .bin) and still validates; ONNX has no
    fp16 precision and says so on one line."""
    rc, _, err = cli(export_main, "--plugin", PLUGIN, "bench_tiny", "--to", "openvino", "--out", tmp_path / "32")
    assert rc == 0, err
    rc, _, err = cli(export_main, "--plugin", PLUGIN, "bench_tiny", "--to", "openvino", "--precision", "fp16",
                     "--out", tmp_path / "16")
    assert rc == 0, err
    (e16,), (e32,) = _manifest(tmp_path / "16"), _manifest(tmp_path / "32")
    assert e16["precision"] == "fp16" and e32["precision"] == "fp32"
    import openvino as ov

    types = {str(op.get_output_element_type(0)) for op in
             ov.Core().read_model(str(tmp_path / "16" / e16["path"])).get_ops() if op.get_type_name() == "Constant"}
    assert "<Type: 'float16'>" in types
    bin16 = (tmp_path / "16" / e16["path"]).with_suffix(".bin").stat().st_size
    bin32 = (tmp_path / "32" / e32["path"]).with_suffix(".bin").stat().st_size
    assert bin16 < 0.6 * bin32
    assert e16["validation"]["top1"] == 1.0
    rc, _, err = cli(export_main, "--plugin", PLUGIN, "bench_tiny", "--to", "onnx", "--precision", "fp16",
                     "--out", tmp_path / "onnx16")
    assert rc != 0 and "onnx export takes fp32, not fp16; use --precision fp16 with" in err and "Traceback" not in err
    assert not list((tmp_path / "onnx16").glob("*.onnx"))


@pytest.mark.slow
def test_export_use_ema_picks_the_ema_weights(cli, tmp_path):
    """A timm --model-ema file holds both; --use-ema exports the EMA weights, without it the plain ones."""
    import sys

    sys.path.insert(0, str(TESTS))
    from bench_models import TinyHybrid

    from hvit_deploy.runtimes import run_artifact

    torch.manual_seed(0)
    plain, ema = TinyHybrid().eval(), TinyHybrid().eval()
    ckpt = tmp_path / "both.pth"
    torch.save({"state_dict": plain.state_dict(), "state_dict_ema": ema.state_dict()}, ckpt)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = {"ema": ema(torch.from_numpy(x)).numpy(), "plain": plain(torch.from_numpy(x)).numpy()}
    assert np.abs(want["ema"] - want["plain"]).max() > 1e-3
    for which, extra in (("ema", ["--use-ema"]), ("plain", [])):
        out = tmp_path / which
        rc, _, err = cli(export_main, "--plugin", PLUGIN, "bench_tiny", "--checkpoint", ckpt, *extra, "--to", "onnx",
                         "--out", out)
        assert rc == 0, err
        (entry,) = _manifest(out)
        got = run_artifact("onnxruntime", out / entry["path"], [x])[0]
        np.testing.assert_allclose(got, want[which], atol=1e-4)


@pytest.mark.slow
def test_export_both_no_rewrite_and_no_validate(cli, tmp_path):
    """--both: the rewritten model and the model as written, two entries; --no-rewrite: only the latter;
    --no-validate: no comparison with PyTorch is recorded."""
    rc, _, err = cli(export_main, "efficientmod_xxs", "--input-size", "64", "--to", "onnx", "--both", "--no-validate",
                     "--out", tmp_path / "both")
    assert rc == 0, err
    entries = _manifest(tmp_path / "both")
    by = {e["rewritten"]: e for e in entries}
    assert len(entries) == 2 and set(by) == {True, False}
    assert by[False]["rewrites"] == [] and "explicit_attention" in by[True]["rewrites"]
    assert by[True]["path"] != by[False]["path"]
    assert all(not (e.get("validation") or {}).get("max_abs") for e in entries)
    rc, _, err = cli(export_main, "efficientmod_xxs", "--input-size", "64", "--to", "onnx", "--no-rewrite",
                     "--out", tmp_path / "orig")
    assert rc == 0, err
    (orig,) = _manifest(tmp_path / "orig")
    assert orig["rewritten"] is False and orig["rewrites"] == [] and orig["validation"]["top1"] == 1.0


# --- hvit-bench ------------------------------------------------------------------------------------------------

def test_list_profiles(cli):
    rc, out, _ = cli(bench_main, "--list-profiles")
    assert rc == 0
    from hvit_deploy.resources import profiles_dir

    names = [line.split()[0] for line in out.strip().splitlines()]
    assert names and sorted(names) == sorted(f.stem for f in Path(profiles_dir()).glob("*.yaml"))
    assert "ci" in names


@pytest.mark.slow
def test_bench_threads_timeout_and_no_rewrite(tmp_path, monkeypatch):
    """--threads 2 reaches the worker (its environment and the runtime session) and is read back in the results;
    --no-rewrite times the model as written; --timeout is accepted and a healthy worker finishes within it."""
    monkeypatch.setenv("HVIT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    rc = bench_main(["--models", "bench_tiny", "--backends", "onnxruntime", "--no-rewrite", "--threads", "2",
                     "--timeout", "600", "--iters", "4", "--rounds", "1", "--out", str(out), *FAST])
    assert rc == 0
    doc = json.loads(out.read_text())
    (e,) = doc["results"]
    assert e["status"] == "ok" and e["variant"] == "original" and e["threads"] == 2
    assert doc["environment"]["threads"]["worker_env"]["OMP_NUM_THREADS"] == "2"


def test_bench_timeout_stops_a_silent_worker(tmp_path, monkeypatch, capsys):
    """--timeout S: a worker silent for longer than S is stopped and its entry recorded as failed, with the
    reason; the command still writes its results file."""
    monkeypatch.setenv("HVIT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    rc = bench_main(["--models", "bench_tiny", "--backends", "onnxruntime", "--variants", "original", "--timeout",
                     "0.01", "--iters", "4", "--rounds", "1", "--out", str(out), *FAST])
    doc = json.loads(out.read_text())
    (e,) = doc["results"]
    assert rc != 0 and e["status"] != "ok"
    assert "no answer for 0 s (stalled); stopped it" in json.dumps(e)


# --- hvit-bench compare ----------------------------------------------------------------------------------------

def test_compare_alpha_is_honoured(tmp_path, capsys):
    """--alpha sets the significance level of the test: recorded in the JSON, and a level no p-value can reach
    turns the recorded 10 % slowdown's regressions into 'unchanged'."""
    doc = json.loads(FIXTURE.read_text())
    for e in doc["results"]:
        if e.get("samples_ms"):
            e["samples_ms"] = [v * 1.10 for v in e["samples_ms"]]
            e["median_ms"] = float(np.median(e["samples_ms"]))
    cand = tmp_path / "slow.json"
    cand.write_text(json.dumps(doc))
    rc = bench_main(["compare", str(FIXTURE), str(cand), "--format", "json", "--alpha", "0.05"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 1 and res["alpha"] == 0.05
    rc = bench_main(["compare", str(FIXTURE), str(cand), "--format", "json", "--alpha", "1e-300"])
    res = json.loads(capsys.readouterr().out)
    assert res["alpha"] == 1e-300 and rc != 1
