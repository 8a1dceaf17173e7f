"""BF16 as a compute precision: the FP32 artifact (or the eager module) computed in bfloat16.

This machine's CPUs (AMD EPYC Milan, AVX2) have no BF16 arithmetic: the bf16 entries must be skipped with the
reason, and an export must record what its session really computed in. Where a test must reach the code a BF16 CPU
runs, only the capability (``hvit_deploy.utils.cpu.has_bf16``) is mocked; OpenVINO, torch and the gate are real,
and what OpenVINO reads back is asserted as it really is on the CPU running the test."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hvit_deploy.utils import cpu

PLUGIN = str(Path(__file__).parent / "bench_models.py")
CAPABLE = str(Path(__file__).parent / "bf16_capable.py")
FAST = ["--plugin", PLUGIN, "--profile", str(Path(__file__).parent / "data" / "bench_fast.yaml"), "--no-progress"]
REAL_BF16 = cpu.has_bf16()   # what this CPU really has, before any test mocks it


@pytest.fixture(scope="module", autouse=True)
def _tiny_models():
    """bench_tiny registered when this module's tests run (not at import: collection imports every test module
    in every xdist worker, and a registered plugin family would show in other modules' family lists)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_models  # noqa: F401


@pytest.fixture
def bf16_cpu(monkeypatch):
    """This CPU reported as having BF16 arithmetic (the one thing no machine here can show)."""
    monkeypatch.setattr(cpu, "has_bf16", lambda: True)


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory) -> Path:
    """bench_tiny as an FP32 OpenVINO IR (written by the real converter, no validation needed here)."""
    import openvino as ov
    import torch

    import bench_models

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ir") / "tiny.xml"
    ov.save_model(ov.convert_model(bench_models.bench_tiny().eval(), example_input=torch.randn(1, 3, 64, 64)),
                  str(path), compress_to_fp16=False)
    return path


def _ov_word(compiled) -> str:
    from hvit_deploy.runtimes.openvino_cpu import PRECISION_WORDS, plain

    return PRECISION_WORDS[plain(compiled.get_property("INFERENCE_PRECISION_HINT"))]


@pytest.mark.skipif(REAL_BF16, reason="this CPU has BF16: nothing is skipped")
def test_bf16_entries_skipped_with_the_reason_here(tmp_path, cli):
    from hvit_deploy.bench.runner import precision_unavailable
    from hvit_deploy.cli.bench import main

    for backend in ("openvino", "torch"):
        why = precision_unavailable(backend, "bf16")
        assert "no BF16 arithmetic" in why and "avx512_bf16" in why and "amx_bf16" in why and backend in why
    assert "ONNX Runtime's CPU execution provider has no real BF16 or FP16" in precision_unavailable("onnxruntime", "bf16")
    assert precision_unavailable("openvino", "rewritten") is None
    out = tmp_path / "r.json"
    rc, _, err = cli(main, "--models", "bench_tiny", "--backends", "torch", "onnxruntime", "openvino", "--variants",
                     "bf16", "--iters", "5", "--out", out, *FAST)
    entries = {e["backend"]: e for e in json.loads(out.read_text())["results"]}
    assert set(entries) == {"torch", "onnxruntime", "openvino"}
    for b, e in entries.items():
        assert e["status"] == "skipped" and e["reason"] == precision_unavailable(b, "bf16")
        assert e.get("compute_precision") is None        # nothing computed, nothing claimed
        assert e["artifact_precision"] == "fp32"
    assert "no BF16 arithmetic" in err


def test_openvino_gets_the_bf16_hint_and_records_what_it_reads_back(tiny_ir, bf16_cpu):
    from hvit_deploy.runtimes import open_runtime

    rt = open_runtime("openvino", {"artifact": str(tiny_ir), "threads": 1, "compute_precision": "bf16"})
    try:
        assert rt.config()["INFERENCE_PRECISION_HINT"] == "bf16"          # the hint is passed
        assert rt.readback["asked_precision"] == "bf16"
        got = rt.readback["INFERENCE_PRECISION_HINT"]
        assert rt.compute_precision == {"f32": "fp32", "bf16": "bf16"}[got]   # never more than OpenVINO says
        assert rt.compute_precision == ("bf16" if REAL_BF16 else "fp32")     # this CPU: f32 whatever was asked
        if rt.compute_precision != "bf16":
            assert any("INFERENCE_PRECISION_HINT=bf16" in n and "fp32" in n for n in rt.notes)
        fp32 = open_runtime("openvino", {"artifact": str(tiny_ir), "threads": 1})
        assert fp32.config()["INFERENCE_PRECISION_HINT"] == "f32" and fp32.compute_precision == "fp32"
    finally:
        rt.close()


def test_torch_bf16_autocast_really_computes_in_bf16():
    from hvit_deploy.metrics import cosine_rows
    from hvit_deploy.runtimes import open_runtime

    x = [np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)]
    spec = {"model": "bench_tiny", "threads": 1}
    ref = open_runtime("torch", spec).predict(x)[0]
    rt = open_runtime("torch", {**spec, "compute_precision": "bf16"})
    got = rt.predict(x)[0]
    assert rt.compute_precision == "bf16" and "bfloat16" in rt.timing
    assert got.dtype == np.float32 and not np.array_equal(got, ref)       # bf16 rounding shows in the logits
    assert cosine_rows(ref, got)[0] > 0.99
    rt.prepare()
    assert rt.call().dtype.is_floating_point
    with pytest.raises(Exception, match="ONNX Runtime's CPU execution provider has no real BF16"):
        open_runtime("onnxruntime", {"artifact": "x.onnx", "compute_precision": "bf16"})


def test_the_gate_records_figures_and_a_strict_one_fails(bf16_cpu):
    from hvit_deploy.bench import messages as m
    from hvit_deploy.bench.worker import precision_gate
    from hvit_deploy.quantize.calibration import held_out_set
    from hvit_deploy.quantize.compute import compute_gate, failure_text
    from hvit_deploy.recipes import QuantGate
    from hvit_deploy.runtimes import RuntimeSpec

    spec = RuntimeSpec(model="bench_tiny", backend="torch", threads=1, compute_precision="bf16")
    check = precision_gate(m.GateCmd(spec=spec))                 # the shipped photos, eager FP32 as reference
    fig = check["figures"]
    assert check["asked"] == check["compute_precision"] == "bf16" and check["held_out"]["size"] == 2
    assert fig["images"] == 2 and 0.99 < fig["mean_cosine"] < 1.0 and check["passed"] and not check["failures"]
    from hvit_deploy.preprocess import preprocessing_for

    held = held_out_set(preprocess=preprocessing_for("bench_tiny"))
    strict = QuantGate(min_mean_cosine=0.9999999, min_top1_agreement=1.0)
    ref = np.zeros((2, 10), dtype=np.float32)                     # a reference nothing agrees with
    ref[:, 0] = 1.0
    bad = compute_gate("torch", spec.model_dump(exclude_none=True), held, ref, strict)
    assert not bad["passed"] and any("mean cosine" in f for f in bad["failures"])
    assert failure_text(bad).startswith("BF16 accuracy gate failed: ")


def test_export_bf16_writes_the_hint_and_records_what_was_computed(cli, tmp_path):
    import openvino as ov

    from hvit_deploy.cli.export import main
    from hvit_deploy.runtimes import open_runtime

    rc, _, err = cli(main, "--plugin", PLUGIN, "bench_tiny", "--to", "openvino", "--precision", "bf16", "--out",
                     tmp_path)
    assert rc == 0, err
    e = json.loads((tmp_path / "manifest.json").read_text())["artifacts"][0]
    assert e["path"] == "bench_tiny-bf16.xml" and e["precision"] == "bf16" and e["artifact_precision"] == "fp32"
    gate = e["precision_gate"]
    assert gate["passed"] and gate["asked"] == "bf16" and gate["figures"]["images"] == 2
    assert e["compute_precision"] == gate["compute_precision"] == ("bf16" if REAL_BF16 else "fp32")
    if not REAL_BF16:
        assert any("this CPU has no BF16 arithmetic" in n for n in e["notes"])
    xml = tmp_path / e["path"]
    core = ov.Core()
    model = core.read_model(str(xml))
    assert str(model.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str)) == "bf16"
    # OpenVINO's own compile does not apply this rt_info key (only its KV-cache / dynamic-quantization ones):
    # what it computes in is its CPU default, bf16 only on a CPU with BF16
    assert _ov_word(core.compile_model(str(xml), "CPU")) == ("bf16" if REAL_BF16 else "fp32")
    rt = open_runtime("openvino", {"artifact": str(xml), "threads": 1})    # the project's runtime reads the hint
    assert rt.asked_precision == "bf16" and rt.config()["INFERENCE_PRECISION_HINT"] == "bf16"
    assert rt.compute_precision == e["compute_precision"]


@pytest.mark.parametrize("fmt", ["onnx", "coreml"])
def test_bf16_for_a_format_that_cannot_is_one_line_exit_two(cli, fmt):
    from hvit_deploy.cli.export import main

    rc, _, err = cli(main, "efficientmod_xxs", "--to", fmt, "--precision", "bf16")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0] == (f"hvit-export: error: --precision bf16 is a compute precision (the FP32 artifact, computed "
                        f"in bf16 by its runtime), which openvino can carry, not {fmt}")


def test_bench_bf16_with_a_bf16_cpu_gates_then_times_and_reads_back(tmp_path, cli):
    """The whole hvit-bench path a BF16 CPU takes (the capability mocked by a --plugin, in every worker too)."""
    from hvit_deploy.cli.bench import main

    out = tmp_path / "r.json"
    rc, _, err = cli(main, "--plugin", CAPABLE, "--models", "bench_tiny", "--backends", "openvino",
                     "--variants", "bf16", "--iters", "5", "--out", out, *FAST)    # torch's bf16: tested in-process
    assert rc == 0, err
    (ov_e,) = json.loads(out.read_text())["results"]
    assert ov_e["status"] == "ok" and ov_e["variant"] == "bf16" and ov_e["artifact_precision"] == "fp32"
    gate = ov_e["precision_gate"]
    assert gate["passed"] and gate["asked"] == "bf16" and gate["figures"]["images"] == 2
    assert gate["compute_precision"] == ov_e["compute_precision"]
    assert ov_e["fp32_variant"] == "original"          # bench_tiny has no recipe: the as-written FP32 form
    assert ov_e["compute_precision"] == ("bf16" if REAL_BF16 else "fp32")   # what OpenVINO read back
    assert ov_e["threads_readback"]["asked_precision"] == "bf16"
    if not REAL_BF16:
        assert any("INFERENCE_PRECISION_HINT=bf16" in n for n in ov_e["notes"])
    assert "bf16 accuracy gate against eager FP32" in err and "estimated " in err


def test_the_gate_images_eval_data_then_the_calibration_split_then_the_photos(tmp_path):
    from int8_helpers import make_images

    from hvit_deploy.bench.request import build_request
    from hvit_deploy.errors import HvitError
    from hvit_deploy.export.request import ExportRequest
    from hvit_deploy.preprocess import preprocessing_for
    from hvit_deploy.quantize.calibration import held_out_set, split_sets

    pre = preprocessing_for("bench_tiny")
    make_images(tmp_path / "eval", 2, seed=3)                       # ImageFolder: labels, so accuracy too
    make_images(tmp_path / "calib", 3, seed=4, labelled=False)
    ev = held_out_set(eval_data=tmp_path / "eval", preprocess=pre)
    assert ev.arrays.shape == (4, 3, 64, 64) and ev.labels == [0, 0, 1, 1]
    split = held_out_set(calibration=tmp_path / "calib", holdout=2, preprocess=pre)
    assert split.hashes == split_sets(tmp_path / "calib", holdout=2)[1].hashes   # INT8's held-out images
    photos = held_out_set(preprocess=pre)
    assert sorted(p.name for p in photos.paths) == ["chelsea.png", "coffee.png"]
    # the flags that carry them: --eval-data and --calibration go with bf16, --calibration-size does not
    req = build_request(profile="ci", models=["efficientmod_xxs"], backends=["openvino"], forms=["bf16"],
                        eval_data=str(tmp_path / "eval"))
    assert req.profile.eval_data == str((tmp_path / "eval").resolve())
    with pytest.raises(HvitError, match="--calibration-size goes with --variants ... int8$"):
        build_request(profile="ci", models=["efficientmod_xxs"], forms=["bf16"], calibration_size=4)
    r = ExportRequest(models=["efficientmod_xxs"], formats=["openvino"], precision="bf16",
                      eval_data=str(tmp_path / "eval"))
    assert r.export_options()["eval_data"] == str(tmp_path / "eval") and r.converted and not r.quantized
    with pytest.raises(HvitError, match="--calibration-size goes with --precision int8"):
        ExportRequest(models=["efficientmod_xxs"], formats=["openvino"], precision="bf16", calibration_size=4)
