"""``--precision auto``: the precision ladder of each runtime, gated, timed side by side in one run, and the pick.

Real exports, quantizer, gate and runtimes on the tiny plugin model (``bench_tiny``, 64x64) with few runs; a rung
fails its gate for real (a recipe whose gate no INT8 artifact can meet, fallback off). Only the CPU's BF16
capability is mocked (no machine shows both answers). The pick on measured-looking samples is checked on the
ladder builder itself, with samples given (a statistic, no runtime stands in)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from int8_helpers import make_images  # noqa: E402

from hvit_deploy.bench import ladder as ladder_mod  # noqa: E402
from hvit_deploy.bench.schema import ResultsDoc, ResultsEntry  # noqa: E402
from hvit_deploy.cli.bench import main as bench_main  # noqa: E402
from hvit_deploy.cli.export import main as export_main  # noqa: E402
from hvit_deploy.export.ladder import Ladder  # noqa: E402
from hvit_deploy.export.manifest import load_manifest  # noqa: E402

PLUGIN = str(Path(__file__).parent / "bench_models.py")
FAST = ["--plugin", PLUGIN, "--profile", str(Path(__file__).parent / "data" / "bench_fast.yaml"), "--no-progress"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HVIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_export_auto_passes_over_a_rung_that_fails_its_gate(tmp_path, cache_dir, capsys):
    """ONNX ladder of bench_tiny with a gate no INT8 artifact meets (mean cosine 1.0) and no fallback: the int8
    rung is recorded as gate_failed with the gate's words, FP32 is picked, the ladder round-trips."""
    calib = tmp_path / "calib"
    make_images(calib, 4, seed=3, labelled=False)
    recipe = tmp_path / "strict.yaml"
    recipe.write_text("family: bench_test\nquantization:\n  gate: {min_mean_cosine: 1.0}\n")
    out = tmp_path / "out"
    code = export_main(["bench_tiny", "--plugin", PLUGIN, "--to", "onnx", "--precision", "auto", "--calibration",
                        str(calib), "--recipe", str(recipe), "--no-fallback", "--iters", "4", "--rounds", "2",
                        "--threads", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "precision ladder" in printed and "pick: bench_tiny onnx: fp32" in printed
    m = load_manifest(out)
    (lad,) = m.ladders
    assert (lad.model, lad.runtime, lad.format, lad.threads) == ("bench_tiny", "onnxruntime", "onnx", 1)
    assert lad.pick == "fp32"
    fp32, int8 = lad.rung("fp32"), lad.rung("int8")
    assert fp32.status == "picked" and fp32.ratio_vs_fp32 == 1.0 and fp32.gate_passed and fp32.size_bytes > 0
    assert (out / Path(lad.pick_path).name).is_file()
    assert int8.status == "gate_failed" and "INT8 accuracy gate failed (fallback off): mean cosine" in int8.why
    assert int8.ratio_vs_fp32 is None   # never timed: the artifact was not written
    assert any(f.format == "onnx" and "gate failed" in (f.error or "") for f in m.failures)
    assert Ladder.model_validate(json.loads(json.dumps(lad.to_json()))) == lad
    doc = json.loads((out / "ladder-results.json").read_text())
    assert {(e["backend"], e["variant"], e["status"]) for e in doc["results"]} == {
        ("onnxruntime", "original", "ok"), ("onnxruntime", "int8", "error")}


def _entry(backend: str, form: str, ms: float, *, gate: bool | None = None, seed: int = 0) -> ResultsEntry:
    rng = np.random.default_rng(seed)
    samples = list(np.round(ms * (1 + 0.01 * rng.standard_normal(40)), 6))
    art = {"path": f"/x/{backend}-{form}", "size_bytes": 1000}
    if gate is not None:
        fig = {"mean_cosine": 0.999, "top1_agreement_within_tie": 1.0}
        art["quantization"] = {"gate": {"passed": gate, "final": fig}}
    return ResultsEntry(model="efficientmod_xxs", backend=backend, form=form, status="ok", threads=2, rounds=4,
                        samples_ms=samples, median_ms=float(np.median(samples)), median_ci_ms=[ms, ms], artifact=art)


def test_pick_is_the_fastest_passing_rung_and_int8_that_does_not_pay_says_so(monkeypatch, capsys):
    """ONNX Runtime: INT8 at 1.6x FP32 passed its gate: picked, recommended. OpenVINO: INT8 slower than FP32: FP32
    picked, INT8 recorded with recommended false and the sentence, with the ratio and its interval."""
    monkeypatch.setattr(ladder_mod, "FORM_NAMES", ("rewritten", "original", "int8"))  # bf16 rungs: not in the run
    doc = ResultsDoc(settings={"threads": 2, "iterations": 40, "rounds": 4, "processes": 2}, results=[
        _entry("onnxruntime", "rewritten", 10.0), _entry("onnxruntime", "int8", 6.25, gate=True, seed=1),
        _entry("openvino", "rewritten", 10.0, seed=2), _entry("openvino", "int8", 12.5, gate=True, seed=3)])
    ort, ov = ladder_mod.build_ladders(doc, ["onnxruntime", "openvino"], calibration=True)
    assert ort.pick == "int8" and ort.rung("int8").recommended is True and ort.rung("int8").verdict is None
    assert ort.rung("fp32").status == "passed" and "passed over" in ort.rung("fp32").why
    assert abs(ort.rung("int8").ratio_vs_fp32 - 1.6) < 0.05
    lo, hi = ort.rung("int8").ratio_ci
    assert lo <= ort.rung("int8").ratio_vs_fp32 <= hi
    assert ov.pick == "fp32" and ov.rung("int8").recommended is False
    assert ov.rung("int8").verdict.startswith("INT8 does not pay here: 0.8") and "on openvino, 2 threads" in \
        ov.rung("int8").verdict
    assert "FP32 [" in ov.rung("int8").verdict
    # INT8 faster than FP32 but under 1.2x: not picked, FP32 is (INT8 costs accuracy for too small a gain)
    doc.results[3] = _entry("openvino", "int8", 9.0, gate=True, seed=3)
    _, ov2 = ladder_mod.build_ladders(doc, ["onnxruntime", "openvino"], calibration=True)
    assert ov2.pick == "fp32" and ov2.rung("int8").recommended is False and ov2.rung("int8").ratio_vs_fp32 > 1
    assert "passed over: INT8 does not pay here" in ov2.rung("int8").why
    text = ladder_mod.format_ladders([ort, ov])
    assert "PICK" in text and f"{ov.model}: INT8 does not pay here" in text
    # across runtimes: ONNX Runtime's INT8 pick against OpenVINO's FP32 pick, from the same run
    (line,) = ladder_mod.fastest_here([ort, ov2])
    ms, ms2 = ort.rung("int8").median_ms, ov2.rung("fp32").median_ms
    assert line == (f"{ort.model}: fastest here, 2 threads: onnxruntime int8, {ms:.2f} ms; next openvino fp32, "
                    f"{ms2:.2f} ms ({ms2 / ms:.2f}× as long)") and 1.5 < ms2 / ms < 1.7
    assert line in ladder_mod.format_ladders([ort, ov2]) and ladder_mod.fastest_here([ort]) == []
    (with_ci,) = ladder_mod.fastest_here([ort, ov2], doc.results)  # the run's samples: the ratio's interval
    lo, hi = (float(v) for v in with_ci.split("as long [")[1].split("]")[0].split(", "))
    assert with_ci.startswith(line[:-1]) and lo <= ms2 / ms <= hi and lo > 1.0 and "not settled" not in with_ci
    # hvit-bench prints the picks and the verdicts, each with its model (a run has one per model and runtime)
    from types import SimpleNamespace

    from hvit_deploy.cli.bench import _print_ladders

    req = SimpleNamespace(backends=["onnxruntime", "openvino"], profile=SimpleNamespace(calibration="calib"), out=None)
    _print_ladders(req, doc, "table", ladder=True)
    err = capsys.readouterr().err.splitlines()
    model = doc.results[0].model
    assert f"hvit-bench: pick: {model} openvino: fp32" in err
    assert [line for line in err if "does not pay" in line] == [
        f"hvit-bench: {model}: {ov2.rung('int8').verdict}"]


def test_a_gated_bf16_rung_is_picked_over_fp32_and_a_failed_int8_gate(monkeypatch):
    """With BF16 on the CPU and the bf16 form present, the bf16 rung's own gate record (``precision_gate``, taken
    before timing) makes it eligible; an INT8 entry that failed its gate is recorded gate_failed, with its words."""
    monkeypatch.setattr(ladder_mod, "has_bf16", lambda: True)
    monkeypatch.setattr(ladder_mod, "FORM_NAMES", ("rewritten", "original", "int8", "bf16"))
    bf16 = _entry("openvino", "bf16", 6.0, seed=7)
    bf16.artifact = None
    bf16.precision_gate = {"passed": True, "figures": {"mean_cosine": 0.9999, "top1_agreement_within_tie": 1.0}}
    failed = ResultsEntry(model="efficientmod_xxs", backend="openvino", form="int8", status="error",
                          error="INT8 accuracy gate failed (fallback off): mean cosine 0.9 < 0.99")
    doc = ResultsDoc(settings={"threads": 2}, results=[_entry("openvino", "rewritten", 10.0, seed=6), bf16, failed])
    (ov,) = ladder_mod.build_ladders(doc, ["openvino"], calibration=True)
    assert ov.pick == "bf16" and ov.rung("bf16").gate_passed and ov.rung("bf16").gate["mean_cosine"] == 0.9999
    assert ov.rung("int8").status == "gate_failed" and "mean cosine 0.9 < 0.99" in ov.rung("int8").why


def test_a_cpu_without_bf16_gives_no_bf16_rung_with_the_reason(monkeypatch):
    monkeypatch.setattr(ladder_mod, "has_bf16", lambda: False)
    for runtime in ("openvino", "torch"):
        built, left = ladder_mod.plan_rungs(runtime, calibration=True)
        assert "bf16" not in [r.precision for r in built]
        (bf16,) = [r for r in left if r.precision == "bf16"]
        assert bf16.status == "not_built" and bf16.why.startswith("no BF16 on this CPU (none of avx512_bf16")
    monkeypatch.setattr(ladder_mod, "has_bf16", lambda: True)   # a CPU with BF16: not left out for the CPU
    built, left = ladder_mod.plan_rungs("openvino", calibration=True)
    assert all("no BF16 on this CPU" not in (r.why or "") for r in left)


def test_bench_auto_writes_the_ladders_into_the_results(tmp_path, cache_dir, capsys):
    """hvit-bench --precision auto without calibration: FP32 timed, INT8 listed as not built with the reason."""
    out = tmp_path / "r.json"
    code = bench_main(["--models", "bench_tiny", "--backends", "onnxruntime", "--precision", "auto", "--iters", "4",
                       "--rounds", "2", "--out", str(out), *FAST])
    printed = capsys.readouterr().out
    assert code == 0 and "precision ladder" in printed
    from hvit_deploy.bench.results import load_results

    (lad,) = [Ladder.model_validate(x) for x in load_results(out).ladders]
    assert lad.pick == "fp32" and lad.rung("fp32").median_ms > 0
    assert lad.rung("int8").status == "not_built" and "--calibration DIR" in lad.rung("int8").why


@pytest.mark.parametrize("argv, message", [
    (["--to", "coreml", "--precision", "auto"], "coreml has no ladder"),
    (["--to", "onnx", "--threads", "2"], "--threads goes with --precision auto"),
    (["--to", "onnx", "--precision", "auto", "--dynamic-batch"], "leave out --dynamic-batch"),
])
def test_export_auto_input_errors_are_one_line(tmp_path, capsys, argv, message):
    code = export_main(["bench_tiny", "--plugin", PLUGIN, "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bench_auto_refuses_variants(tmp_path, capsys):
    code = bench_main(["--models", "bench_tiny", "--precision", "auto", "--variants", "int8", "--out",
                       str(tmp_path / "r.json"), *FAST])
    assert code == 2 and "leave out --variants" in capsys.readouterr().err


def test_int8_verdict_never_shows_a_ratio_below_the_bar_as_the_bar():
    """1.196× is below 1.2×: the verdict shows three decimals where two would round it up to the bar."""
    from hvit_deploy.bench.ladder import int8_verdict

    cpu = {"model": "CPU", "flags": [], "vnni": False, "bf16": False}
    assert int8_verdict(1.196, [1.16, 1.22], "onnxruntime", 1, cpu).startswith(
        "INT8 does not pay here: 1.196× FP32 [1.16, 1.22] on onnxruntime, 1 thread,")
    assert int8_verdict(0.93, None, "openvino", 2, cpu).startswith("INT8 does not pay here: 0.93× FP32 on openvino, 2 threads,")


def test_a_pick_whose_interval_holds_one_says_it_is_not_settled():
    """The pick stands on the point estimate; a non-FP32 pick whose interval reaches 1.0 carries a note (shown
    after the pick line), a settled one and an FP32 pick do not."""
    from hvit_deploy.bench.ladder import uncertain_pick
    from hvit_deploy.export.ladder import LadderRung

    def rung(precision, ratio, ci):
        return LadderRung(precision=precision, form=precision, status="picked", ratio_vs_fp32=ratio, ratio_ci=ci)

    assert uncertain_pick(rung("int8", 1.57, [0.48, 2.62])) == (
        "not settled: int8's 1.57× FP32 has the interval [0.48, 2.62], which holds 1.0 (no faster); "
        "more --rounds or a quieter machine settle it")
    assert uncertain_pick(rung("int8", 1.30, [1.00, 1.41])) is not None   # 1.0 itself is "no faster"
    assert uncertain_pick(rung("int8", 1.30, [1.01, 1.41])) is None
    assert uncertain_pick(rung("bf16", 1.30, None)) is None                  # no interval: nothing to say
    assert uncertain_pick(rung("fp32", 1.0, [0.9, 1.1])) is None
    lad = Ladder(model="m", runtime="onnxruntime", pick="int8", pick_note="not settled: x")
    assert Ladder.model_validate(json.loads(json.dumps(lad.to_json()))).pick_note == "not settled: x"
    assert Ladder.model_validate({"model": "m", "runtime": "openvino", "pick": "fp32"}).pick_note is None  # old files
