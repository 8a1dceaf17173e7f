"""``hvit-bench compare``: verdicts, exit codes and the report, on real samples recorded on a shared 2-core VM
(tests/data/bench_tiny_cpu.json: bench_tiny on torch, ONNX Runtime and OpenVINO, 600 runs in 12 rounds spread
over 3 worker processes per entry, as the ci profile records them).

On that machine torch eager's process-to-process spread (about ±8 % between worker processes, on a 1 ms model)
is wider than a 10 % change can be told from, and the comparison says so instead of guessing; ONNX Runtime and
OpenVINO are steady enough to resolve it."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from hvit_deploy.bench.compare import compare_docs, parse_threshold
from hvit_deploy.bench.results import load_results
from hvit_deploy.cli.bench import main

FIXTURE = Path(__file__).parent / "data" / "bench_tiny_cpu.json"


@pytest.fixture()
def doc():
    return json.loads(FIXTURE.read_text())


def scaled(doc, factor, only=None):
    out = copy.deepcopy(doc)
    for e in out["results"]:
        if e.get("samples_ms") and (only is None or e["backend"] == only):
            e["samples_ms"] = [round(v * factor, 6) for v in e["samples_ms"]]
            e["median_ms"] = float(np.median(e["samples_ms"]))
    return out


def write(tmp_path, name, doc):
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return str(p)


def test_self_comparison_exits_zero(tmp_path, capsys):
    assert main(["compare", str(FIXTURE), str(FIXTURE), "--report", str(tmp_path / "r.md")]) == 0
    report = (tmp_path / "r.md").read_text()
    assert report.splitlines()[0].startswith("## ✅ Latency: 0 regressions, 0 improvements, 3 unchanged")


def test_ten_percent_slower_exits_one_and_names_the_model(tmp_path, doc):
    cand = write(tmp_path, "slow.json", scaled(doc, 1.10))
    report = tmp_path / "report.md"
    assert main(["compare", str(FIXTURE), cand, "--report", str(report), "--plot", str(tmp_path / "c.png")]) == 1
    text = report.read_text()
    first = text.splitlines()[0]
    assert "2 regressions" in first and "0 improvements" in first
    rows = [l for l in text.splitlines() if l.startswith("| ▲ regression")]
    assert len(rows) == 2 and all("| bench_tiny |" in r and "1.100 (+10.0%)" in r for r in rows)
    assert {r.split("|")[3].strip() for r in rows} == {"onnxruntime", "openvino"}
    torch_row = next(l for l in text.splitlines() if "| torch |" in l)
    assert torch_row.startswith("| unchanged") and "not significant" in torch_row and "too wide" in torch_row
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ten_percent_faster_exits_zero_and_reports_improvement(tmp_path, doc):
    cand = write(tmp_path, "fast.json", scaled(doc, 0.90))
    report = tmp_path / "report.md"
    assert main(["compare", str(FIXTURE), cand, "--report", str(report)]) == 0
    text = report.read_text()
    assert "0 regressions, 2 improvements" in text.splitlines()[0]
    assert text.count("| ▼ improvement | bench_tiny |") == 2


def test_one_backend_slower_is_the_only_regression(tmp_path, doc):
    cmp = compare_docs(doc, scaled(doc, 1.10, only="onnxruntime"))
    verdicts = {r.backend: r.verdict for r in cmp.rows}
    assert verdicts == {"onnxruntime": "regression", "torch": "unchanged", "openvino": "unchanged"}
    assert cmp.rows[0].backend == "onnxruntime"  # sorted by severity
    assert cmp.exit_code() == 1


def test_bootstrap_resample_and_uniform_noise_are_not_flagged(doc):
    rng = np.random.default_rng(11)
    for transform in (lambda s: rng.choice(s, s.size), lambda s: s * rng.uniform(0.95, 1.05, s.size)):
        cand = copy.deepcopy(doc)
        for e in cand["results"]:
            e["samples_ms"] = transform(np.asarray(e["samples_ms"])).tolist()
        cmp = compare_docs(doc, cand)
        assert [r.verdict for r in cmp.rows] == ["unchanged"] * 3, cmp.summary()


def test_environment_mismatch_is_not_comparable(tmp_path, doc):
    other = copy.deepcopy(doc)
    other["environment"]["cpu"]["model"] = "Apple M2"
    other["environment"]["versions"]["openvino"] = "2099.1"
    cmp = compare_docs(doc, scaled(other, 1.5))
    assert {r.verdict for r in cmp.rows} == {"not comparable"}
    assert all("cpu.model: Intel(R) Xeon(R) Processor vs Apple M2" in r.notes[0] for r in cmp.rows)
    fields = {d.field: d.scope for d in cmp.env_diffs}
    assert fields["cpu.model"] == "all entries" and fields["versions.openvino"] == "openvino, openvino-gpu"
    # the runtime version blocks only its own backend when the machine is the same
    other["environment"]["cpu"]["model"] = doc["environment"]["cpu"]["model"]
    cmp = compare_docs(doc, other)
    verdicts = {r.backend: r.verdict for r in cmp.rows}
    assert verdicts == {"openvino": "not comparable", "torch": "unchanged", "onnxruntime": "unchanged"}
    # --strict turns "not comparable" into exit 4; --allow-env-diff compares anyway
    path = write(tmp_path, "other.json", other)
    assert main(["compare", str(FIXTURE), path]) == 0
    assert main(["compare", str(FIXTURE), path, "--strict"]) == 4
    assert main(["compare", str(FIXTURE), path, "--strict", "--allow-env-diff"]) == 0
    report = tmp_path / "r.md"
    main(["compare", str(FIXTURE), path, "--report", str(report)])
    text = report.read_text()
    env = text.split("### Environment differences", 1)[1]
    assert "| versions.openvino | 2026.4.1 | 2099.1 | openvino, openvino-gpu |" in env


def test_settings_mismatch_missing_and_new(doc):
    cand = copy.deepcopy(doc)
    cand["results"][0]["threads"] = 4
    lost = cand["results"].pop(1)
    cand["results"].append({**copy.deepcopy(lost), "model": "bench_other"})
    cmp = compare_docs(doc, cand)
    by = {(r.model, r.backend): r for r in cmp.rows}
    assert by[("bench_tiny", "torch")].verdict == "not comparable"
    assert "threads: 1 vs 4" in by[("bench_tiny", "torch")].notes[0]
    assert by[("bench_tiny", lost["backend"])].verdict == "missing"
    assert by[("bench_other", lost["backend"])].verdict == "new"
    assert cmp.exit_code() == 0 and cmp.exit_code(strict=True) == 4


def test_failed_candidate_entry_is_missing_with_reason(doc):
    cand = copy.deepcopy(doc)
    cand["results"][2] = {k: cand["results"][2][k] for k in ("model", "backend", "variant")}
    cand["results"][2].update(status="error", error="worker crashed (SIGSEGV)")
    cmp = compare_docs(doc, cand)
    row = next(r for r in cmp.rows if r.verdict == "missing")
    assert "candidate: error: worker crashed (SIGSEGV)" in row.notes


def test_unusable_input_exits_two(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["compare", str(FIXTURE), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hvit-bench compare: error:") and "bad.json:1:2: not valid JSON" in err and "\n" not in err
    assert main(["compare", str(FIXTURE), str(tmp_path / "absent.json")]) == 2
    (tmp_path / "other.json").write_text(json.dumps({"benchmarks": []}))
    assert main(["compare", str(FIXTURE), str(tmp_path / "other.json")]) == 2
    assert main(["compare", str(FIXTURE), str(FIXTURE), "--threshold", "lots"]) == 2


def test_threshold_parsing():
    assert parse_threshold("5%") == pytest.approx(0.05)
    assert parse_threshold("0.1") == pytest.approx(0.1)
    assert parse_threshold("7") == pytest.approx(0.07)
    with pytest.raises(ValueError):
        parse_threshold("150%")


def test_fixture_is_a_valid_results_file():
    doc = load_results(FIXTURE)
    for e in doc.results:
        assert e.median_ms == np.median(e.samples_ms)


def test_old_files_load_typed_and_migrated():
    """Every results file in the repository (fixtures, the committed baseline) loads as a typed document, the
    schema_version 1 key ``precision`` read as the artifact's precision; written back, the keys scripts read stay."""
    from hvit_deploy.bench.schema import SCHEMA_VERSION, ResultsDoc, ResultsEntry

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "tests" / "data").glob("*.json")) + sorted((root / "benchmarks" / "baselines").glob("*.json"))
    assert len(files) >= 2
    for path in files:
        raw = json.loads(path.read_text())
        if "results" not in raw:
            continue
        doc = load_results(path)
        assert isinstance(doc, ResultsDoc) and doc.schema_version == SCHEMA_VERSION
        assert all(isinstance(e, ResultsEntry) for e in doc.results) and len(doc.results) == len(raw["results"])
        for e, r in zip(doc.results, raw["results"]):
            assert e.key == (r["model"], r["backend"], r.get("variant", "rewritten"), r.get("batch_size") or 1)
            assert e.artifact_precision == r.get("precision", r.get("artifact_precision"))
            assert e.samples_ms == r.get("samples_ms", [])
            out = e.to_json()
            assert out["variant"] == e.form and "form" not in out
            assert {k for k in r if k != "precision"} <= set(out)


def test_committed_ci_baseline_matches_the_ci_profile():
    """The workflow compares against benchmarks/baselines/ci.json: it must load, and hold every (model, backend)
    the ci profile times, or CI would report them all as "new"."""
    from hvit_deploy.bench.profiles import load_profile

    base = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines" / "ci.json"
    doc = load_results(base)
    prof = load_profile("ci")
    have = {(e.model, e.backend) for e in doc.results if e.samples_ms}
    assert have == {(m, b) for m in prof.models for b in prof.backends}
    assert all(e.threads == prof.threads for e in doc.results)


# ------------------------------------------------------------------------------------ the paired A/B design

def _adjacent_blocks(samples, block=10):
    """Recorded samples cut into consecutive blocks; blocks 2i and 2i+1 stand for A and B of one ABBA pair
    (neighbours in time, as the worker's alternating blocks are)."""
    import numpy as np

    s = np.asarray(samples)[: len(samples) // (2 * block) * 2 * block].reshape(-1, block)
    med = np.median(s, axis=1)
    return med[0::2], med[1::2]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_paired_blocks_flag_a_planted_5_percent_and_not_a_a(backend):
    from hvit_deploy.bench.stats import compare_paired

    doc = json.loads(FIXTURE.read_text())
    e = next(x for x in doc["results"] if x["backend"] == backend)
    a, b = _adjacent_blocks(e["samples_ms"])
    same = compare_paired(a, b, baseline_median=float(np.median(a)), candidate_median=float(np.median(b)),
                          threshold=0.02)
    assert same.verdict == "unchanged"
    slow = compare_paired(a, b * 1.05, baseline_median=float(np.median(a)),
                          candidate_median=float(np.median(b * 1.05)), threshold=0.02)
    assert slow.verdict == "regression" and slow.ratio_ci[0] > 1.0
    assert 0.02 <= slow.detectable < 0.25  # it reports what it could have seen (finite, above the threshold)


def test_inconclusive_has_its_own_exit_code(tmp_path):
    """An unchanged entry whose run could not have detected the slowdown asked for is inconclusive: exit 5 with
    --require-power (what the pull-request gate passes), 0 without it or when every entry could see it."""
    report = tmp_path / "r.md"
    # the recorded run compared with itself: torch's block spread (±3%) cannot see a 3% slowdown
    assert main(["compare", str(FIXTURE), str(FIXTURE), "--threshold", "2%"]) == 0
    assert main(["compare", str(FIXTURE), str(FIXTURE), "--threshold", "2%", "--require-power", "3%",
                 "--report", str(report)]) == 5
    text = report.read_text()
    assert "Inconclusive" in text and "(inconclusive)" in text and "could detect" in text
    assert main(["compare", str(FIXTURE), str(FIXTURE), "--threshold", "2%", "--require-power", "40%"]) == 0


def test_require_power_per_runtime(tmp_path, capsys):
    """``--require-power 5% --require-power torch=10%`` (the workflow's): each runtime is held to its own figure,
    the others to the plain one; an unknown runtime is one line and exit 2."""
    doc = load_results(FIXTURE)
    det = {r.backend: r.detectable for r in compare_docs(doc, doc, threshold=0.02).rows}
    lo, hi = min(det.values()), max(det.values())
    worst = max(det, key=det.get)
    assert lo < hi
    args = ["compare", str(FIXTURE), str(FIXTURE), "--threshold", "2%", "--format", "json"]
    # every runtime but the worst clears the plain figure; the worst gets its own, above what it could see
    plain = f"{(sorted(det.values())[-2] + hi) / 2 * 100:.3f}%"
    capsys.readouterr()
    assert main(args + ["--require-power", plain]) == 5
    assert main(args + ["--require-power", plain, "--require-power", f"{worst}={hi * 100 + 1:.3f}%"]) == 0
    assert main(args + ["--require-power", plain, "--require-power", f"{worst}={plain}"]) == 5
    capsys.readouterr()
    assert main(args + ["--require-power", "5%", "--require-power", "torhc=10%"]) == 2
    err = capsys.readouterr().err
    assert "--require-power torhc=10%" in err and "torch" in err and "Traceback" not in err


def test_json_form_of_the_comparison_and_its_summary(doc):
    """What `compare --format json` prints: every key of a row and of the comparison, with the row's figures;
    the summary line's wording and plurals."""
    from hvit_deploy.bench.compare import Comparison, Row, _fmt

    cand = scaled(doc, 1.10, only="onnxruntime")
    cmp = compare_docs(doc, cand)
    d = cmp.to_dict()
    assert set(d) == {"summary", "threshold", "alpha", "rows", "environment_differences", "warnings"}
    assert d["summary"] == cmp.summary() and d["threshold"] == cmp.threshold and d["alpha"] == cmp.alpha
    assert d["warnings"] == cmp.warnings and d["environment_differences"] == []
    row = next(r for r in cmp.rows if r.backend == "onnxruntime")
    j = next(x for x in d["rows"] if x["backend"] == "onnxruntime")
    assert j == {"model": "bench_tiny", "backend": "onnxruntime", "variant": row.form, "batch": 1, "verdict": "regression",
                 "baseline_median_ms": row.baseline_ms, "candidate_median_ms": row.candidate_ms, "ratio": row.ratio,
                 "ratio_ci": list(row.ratio_ci), "p_value": row.p_value, "detectable_slowdown": row.detectable,
                 "inconclusive": False, "notes": row.notes}
    assert j["ratio"] == pytest.approx(1.10, abs=1e-3) and len(j["ratio_ci"]) == 2
    assert Row("m", "b", "f", "new").to_dict()["ratio_ci"] is None
    assert cmp.summary() == "1 regression, 0 improvements, 2 unchanged"
    rows = [Row("m", "b", "f", v) for v in ("regression", "regression", "improvement", "new", "missing",
                                               "not comparable", "not comparable")]
    assert Comparison(rows, [], 0.05, 0.01).summary() == ("2 regressions, 1 improvement, 1 new, 1 missing, "
                                                          "2 not comparable")
    assert Comparison([], [], 0.05, 0.01).summary() == "0 regressions, 0 improvements"
    assert _fmt(None) == "—" and _fmt([]) == "none" and _fmt(3) == "3"
    assert _fmt([{"name": "H200"}, {"memory": 1}, "x"]) == "H200, {'memory': 1}, x"
    env = copy.deepcopy(doc)
    env["environment"]["gpu"] = [{"name": "H200"}]
    e = compare_docs(doc, env).to_dict()["environment_differences"]
    assert e == [{"field": "gpu", "baseline": "none", "candidate": "H200", "scope": "GPU backends"}]


def test_require_power_marks_only_unchanged_rows_that_could_not_see_the_slowdown():
    from hvit_deploy.bench.compare import Comparison, Row

    rows = [Row("m", "a", "f", "unchanged", detectable=0.03), Row("m", "b", "f", "unchanged", detectable=0.05),
            Row("m", "c", "f", "unchanged", detectable=None), Row("m", "d", "f", "regression", detectable=0.5)]
    c = Comparison(rows, [], 0.05, 0.01)
    c.require_power(0.05)
    assert [r.inconclusive for r in rows] == [False, False, True, False]     # exactly the target is enough
    c.require_power(0.05, {"a": 0.02})
    assert [r.inconclusive for r in rows] == [True, False, True, False] and c.power_targets == {"a": 0.02}
    assert [r.label for r in c.inconclusive()] == ["m/a/f", "m/c/f"]


def test_states_named_in_notes(doc):
    from hvit_deploy.bench.compare import _state
    from hvit_deploy.bench.schema import ResultsEntry

    assert _state(None) == "absent"
    e = ResultsEntry(model="m", backend="b", variant="original", status="skipped", reason="no GPU here")
    assert _state(e) == "skipped: no GPU here"
    assert _state(ResultsEntry(model="m", backend="b", variant="original", status="ok", samples_ms=[1.0])) == "ok"


# ------------------------------------------------------------------- unit tests of the parts (mutation-driven)
# Hand-made entries and documents, no fixture file: each test pins exact figures, strings and exit codes, so that
# a changed comparison, word or default in hvit_deploy/bench/compare.py fails one of them (tools/mutation.py).

def _samples(seed, n=60, scale=1.0):
    rng = np.random.default_rng(seed)
    return [round(float(v), 6) for v in scale * (1.0 + 0.02 * rng.random(n))]


def _entry(backend="onnxruntime", samples=None, *, model="m", variant="original", **kw):
    from hvit_deploy.bench.schema import ResultsEntry

    if samples is not None:
        kw.update(samples_ms=samples, median_ms=float(np.median(samples)))
    elif kw.get("status", "ok") == "ok":
        raise AssertionError("an ok entry needs samples")
    return ResultsEntry(model=model, backend=backend, variant=variant, **kw)


def _doc(*entries, env=None, **kw):
    from hvit_deploy.bench.schema import ResultsDoc

    return ResultsDoc(results=list(entries), environment=env or {}, **kw)


def test_exit_code_each_rule_alone():
    from hvit_deploy.bench.compare import Comparison, Row

    shy = Row("m", "a", "f", "unchanged")
    shy.inconclusive = True
    assert Comparison([shy], [], 0.05, 0.01).exit_code() == 0            # inconclusive counts only when asked
    assert Comparison([shy], [], 0.05, 0.01).exit_code(require_power=True) == 5
    assert Comparison([shy], [], 0.05, 0.01).exit_code(strict=True) == 0
    missing = Comparison([Row("m", "a", "f", "missing")], [], 0.05, 0.01)
    assert missing.exit_code() == 0 and missing.exit_code(strict=True) == 4
    odd = Comparison([Row("m", "a", "f", "not comparable"), shy], [], 0.05, 0.01)
    assert odd.exit_code(strict=True, require_power=True) == 4
    reg = Comparison([Row("m", "a", "f", "regression"), Row("m", "b", "f", "missing"), shy], [], 0.05, 0.01)
    assert reg.exit_code(strict=True, require_power=True) == 1


def test_environment_diffs_scopes_order_and_gpu_names():
    from hvit_deploy.bench.compare import EnvDiff, environment_diffs

    base = {"cpu": {"model": "A", "logical_cores": 2}, "gpu": [{"name": "H200", "memory_gb": 141}],
            "versions": {"python": "3.11", "openvino": "1", "torch": "2"}, "git": {"commit": "abc"}}
    same_gpu = copy.deepcopy(base)
    same_gpu["gpu"][0]["memory_gb"] = 140                      # only the GPU's name matters
    assert environment_diffs(base, same_gpu) == []
    assert environment_diffs({"gpu": None}, {}) == []
    cand = {"cpu": {"model": "B", "logical_cores": 2}, "gpu": [{"name": "A100"}],
            "versions": {"python": "3.12", "openvino": "2", "torch": "2"}, "git": {"commit": "def"}}
    assert environment_diffs(base, cand) == [
        EnvDiff("cpu.model", "A", "B", "all entries"),
        EnvDiff("gpu", "H200", "A100", "GPU backends"),
        EnvDiff("versions.python", "3.11", "3.12", "all entries"),
        EnvDiff("versions.openvino", "1", "2", "openvino, openvino-gpu"),
        EnvDiff("git.commit", "abc", "def", "informational"),
    ]
    assert environment_diffs({}, {"gpu": [{"name": "H200"}]}) == [EnvDiff("gpu", "none", "H200", "GPU backends")]


def test_env_blockers_by_scope_and_backend():
    from hvit_deploy.bench.compare import EnvDiff, _env_blockers

    gpu = EnvDiff("gpu", "H200", "A100", "GPU backends")
    info = EnvDiff("git.commit", "abc", "def", "informational")
    ov = EnvDiff("versions.openvino", "1", "2", "openvino, openvino-gpu")
    cpu = EnvDiff("cpu.model", "A", "B", "all entries")
    assert _env_blockers("onnxruntime", [gpu, info, ov]) == []
    assert _env_blockers("onnxruntime-cuda", [gpu, info, ov]) == ["gpu: H200 vs A100"]
    assert _env_blockers("openvino-gpu", [gpu, info, ov]) == ["gpu: H200 vs A100", "versions.openvino: 1 vs 2"]
    assert _env_blockers("openvino", [info, ov, cpu]) == ["versions.openvino: 1 vs 2", "cpu.model: A vs B"]
    assert _env_blockers("no-such-runtime", [info, ov]) == []   # a plugin's runtime: no version field of its own
    assert _env_blockers("no-such-runtime", [cpu]) == ["cpu.model: A vs B"]


def test_parse_threshold_edges_and_messages():
    assert parse_threshold("0.5%") == pytest.approx(0.005)    # a % sign always means percent
    assert parse_threshold(" 2.5% ") == pytest.approx(0.025)
    assert parse_threshold("1") == pytest.approx(0.01)        # 1 and above: percent
    assert parse_threshold("0.99") == pytest.approx(0.99)
    assert parse_threshold(12) == pytest.approx(0.12)
    with pytest.raises(ValueError, match=r"^threshold '5X%' is not a number like 5% or 0\.05$"):
        parse_threshold("5X%")
    for text in ("0", "0%", "100%", "100", "-5%"):
        with pytest.raises(ValueError, match=rf"^threshold '{text}' must be between 0% and 100%$"):
            parse_threshold(text)


def test_severity_keys_and_order():
    from hvit_deploy.bench.compare import Row, _severity

    assert _severity(Row("m", "b", "f", "regression", ratio=1.2)) == (0, -1.2)
    assert _severity(Row("m", "b", "f", "regression")) == (0, 0)
    assert _severity(Row("m", "b", "f", "improvement", ratio=0.8)) == (3, 0.8)
    assert _severity(Row("m", "b", "f", "improvement")) == (3, 0)
    assert _severity(Row("m", "b", "f", "missing", batch=4)) == (1, "m", "b", "f", 4)
    assert _severity(Row("m", "b", "f", "unchanged", ratio=1.0)) == (5, "m", "b", "f", 1)


def test_warnings_wording():
    from hvit_deploy.bench.compare import Row, _warnings

    noisy = Row("m", "b", "f", "unchanged", test={"too_noisy": True})
    calm = Row("m", "c", "f", "unchanged", test={"too_noisy": False})
    done, cut = _doc(status="complete"), _doc(status="interrupted")
    assert _warnings([calm, Row("m", "d", "f", "new")], [], 0.05, [("baseline", done), ("candidate", done)]) == []
    assert _warnings([calm, noisy], [], 0.05, [("baseline", done)]) == [
        "some runs are too noisy to resolve a ±5% change; quieten the machine, use more iterations/rounds, or raise "
        "--threshold"]
    tail = (" measured in a single worker process per run: process-to-process variation (memory layout, core "
            "placement; often a few %) is then outside the interval; record with --processes 3 or more (the ci "
            "profile does)")
    assert _warnings([], ["m/b/f"], 0.05, []) == ["1 entry was" + tail]
    assert _warnings([], ["m/b/f", "m/c/f"], 0.05, []) == ["2 entries were" + tail]
    assert _warnings([], [], 0.1, [("baseline", done), ("candidate", cut)]) == [
        "the candidate run was interrupted; its unfinished entries count as missing"]


def _rounds(seed, n=8, scale=1.0):
    return _samples(seed, n=n, scale=scale)


def test_test_passes_every_setting_to_the_paired_comparison():
    from hvit_deploy.bench.compare import _test
    from hvit_deploy.bench.stats import compare_paired

    procs = [0, 0, 0, 0, 1, 1, 1, 1]
    b = _entry(samples=_samples(1, 80), round_medians_ms=_rounds(2), round_process=procs)
    c = _entry(samples=_samples(3, 80, 1.1), round_medians_ms=_rounds(4, scale=1.1), round_process=procs)
    assert float(np.median(b.samples_ms)) != float(np.median(b.round_medians_ms))

    def direct(**kw):
        args = dict(baseline_median=float(np.median(b.samples_ms)), candidate_median=float(np.median(c.samples_ms)),
                    threshold=0.2, alpha=0.05, round_process=procs, seed=7, unit="round")
        return compare_paired(b.round_medians_ms, c.round_medians_ms, **{**args, **kw}).to_dict()

    got = _test(b, c, True, threshold=0.2, alpha=0.05, seed=7).to_dict()
    assert got == direct()
    assert got["notes"][0] == "paired by round: 8 rounds timed side by side in one run"
    # each setting changes the result, so the equality above checks that it was passed on
    for other in ({"threshold": 0.05}, {"alpha": 0.01}, {"round_process": None}, {"seed": 0}):
        assert direct(**other) != got, other
    block = c.model_copy(update={"pairing_mode": {"block": 10}})
    assert _test(b, block, True, threshold=0.2, alpha=0.05, seed=7).to_dict() == direct(unit="block")
    assert direct(unit="block")["notes"][0] == "paired by block: 8 blocks timed side by side in one run"
    # two rounds a side are still paired (too few to test); unequal counts fall back to the unpaired comparison
    two_b = b.model_copy(update={"round_medians_ms": [1.0, 1.1], "round_process": None})
    two_c = c.model_copy(update={"round_medians_ms": [1.2, 1.2], "round_process": None})
    assert _test(two_b, two_c, True, threshold=0.2, alpha=0.05, seed=7).notes == [
        "paired by round: 2 rounds timed side by side in one run", "too few rounds to test (2); use --rounds 8 or more"]
    three_b = two_b.model_copy(update={"round_medians_ms": [1.0, 1.1, 1.0]})
    assert _test(three_b, two_c, True, threshold=0.2, alpha=0.05, seed=7).notes == []
    assert _test(two_b, two_c, False, threshold=0.2, alpha=0.05, seed=7).notes == []


def test_test_passes_every_setting_to_the_unpaired_comparison():
    from hvit_deploy.bench.compare import _test
    from hvit_deploy.bench.stats import compare_runs

    b = _entry(samples=_samples(1), rounds=6, round_process=[0, 0, 1, 1, 2, 2])
    c = _entry(samples=_samples(3, scale=1.08), rounds=6, round_process=[0, 1, 2, 0, 1, 2])

    def direct(**kw):
        args = dict(threshold=0.2, alpha=0.05, baseline_rounds=6, candidate_rounds=6,
                    baseline_round_process=b.round_process, candidate_round_process=c.round_process, seed=7)
        return compare_runs(b.samples_ms, c.samples_ms, **{**args, **kw}).to_dict()

    got = _test(b, c, False, threshold=0.2, alpha=0.05, seed=7).to_dict()
    assert got == direct()
    for other in ({"threshold": 0.05}, {"alpha": 0.01}, {"baseline_round_process": None},
                  {"candidate_round_process": None}, {"seed": 0}, {"baseline_rounds": None},
                  {"candidate_rounds": None}):
        assert direct(**other) != got, other


def _pair(paired, rb, rc, pb, pc, **kw):
    from hvit_deploy.bench.compare import Row, _compare_pair

    b = _entry(samples=_samples(1), round_medians_ms=_rounds(2, rb), processes=pb, iterations=60)
    c = _entry(samples=_samples(3), round_medians_ms=_rounds(4, rc), processes=pc, iterations=60)
    row = Row("m", "onnxruntime", "original", "unchanged")
    one = _compare_pair(row, b, c, kw.pop("diffs", []), paired, threshold=0.05, alpha=0.01,
                        allow_env_diff=kw.pop("allow", False), seed=0)
    return one, row


@pytest.mark.parametrize("paired,rb,rc,pb,pc,one", [
    (False, 2, 2, None, None, True),     # one worker process (the default) per run
    (True, 2, 2, None, None, False),     # paired rounds: the process-to-process spread cancels
    (True, 3, 2, 1, 1, True),            # paired run, but the rounds do not line up
    (False, 0, 0, 3, 3, False),
    (False, 0, 0, 2, 2, False),
    (False, 0, 0, 3, 1, True),
])
def test_compare_pair_says_when_a_single_process_measured_it(paired, rb, rc, pb, pc, one):
    assert _pair(paired, rb, rc, pb, pc)[0] is one


def test_compare_pair_notes_and_figures():
    from hvit_deploy.bench.compare import EnvDiff, Row, _compare_pair, _test

    cpu = EnvDiff("cpu.model", "A", "B", "all entries")
    osd = EnvDiff("os.system", "Linux", "Darwin", "all entries")
    b = _entry(samples=_samples(1), threads=1, iterations=60)
    c = _entry(samples=_samples(3, scale=1.05), threads=4, iterations=30)
    row = Row("m", "onnxruntime", "original", "unchanged")
    assert _compare_pair(row, b, c, [cpu], False, threshold=0.05, alpha=0.01, allow_env_diff=False, seed=0) is False
    assert row.verdict == "not comparable" and row.notes == ["differs: threads: 1 vs 4; cpu.model: A vs B"]
    assert row.test is None and row.ratio is None
    row = Row("m", "onnxruntime", "original", "unchanged")
    assert _compare_pair(row, b, c, [cpu], False, threshold=0.05, alpha=0.01, allow_env_diff=True, seed=0) is False
    assert row.notes == ["differs: threads: 1 vs 4"]
    c = c.model_copy(update={"threads": 1})
    row = Row("m", "onnxruntime", "original", "unchanged")
    assert _compare_pair(row, b, c, [cpu, osd], True, threshold=0.05, alpha=0.01, allow_env_diff=True, seed=3)
    t = _test(b, c, True, threshold=0.05, alpha=0.01, seed=3)
    assert row.notes == (["compared despite environment differences: cpu.model: A vs B; os.system: Linux vs Darwin"]
                         + t.notes + ["iterations differ (60 vs 30)"])
    assert row.test == t.to_dict() and row.test != _test(b, c, True, threshold=0.05, alpha=0.01, seed=0).to_dict()
    assert (row.verdict, row.ratio, row.ratio_ci, row.p_value, row.detectable) == (
        t.verdict, t.ratio, t.ratio_ci, t.p_value, t.detectable)
    assert (row.baseline_ms, row.candidate_ms) == (float(np.median(b.samples_ms)), float(np.median(c.samples_ms)))
    same = c.model_copy(update={"iterations": 60})
    row = Row("m", "onnxruntime", "original", "unchanged")
    _compare_pair(row, b, same, [], False, threshold=0.05, alpha=0.01, allow_env_diff=False, seed=0)
    assert row.notes == _test(b, same, False, threshold=0.05, alpha=0.01, seed=0).notes
    # paired is passed on: the rounds are compared pairwise
    _, row = _pair(True, 8, 8, 3, 3)
    assert row.notes[0] == "paired by round: 8 rounds timed side by side in one run"


def test_compare_docs_pairing_is_one_run_two_sides():
    procs = [0, 0, 0, 0, 1, 1, 1, 1]

    def docs(pb, pc):
        b = _entry(samples=_samples(1, 80), round_medians_ms=_rounds(2), round_process=procs, processes=2)
        c = _entry(samples=_samples(3, 80), round_medians_ms=_rounds(4), round_process=procs, processes=2)
        return compare_docs(_doc(b, pairing=pb), _doc(c, pairing=pc))

    paired = docs({"run": "r1", "side": "baseline"}, {"run": "r1", "side": "candidate"})
    assert paired.paired is True
    assert paired.rows[0].notes[0] == "paired by round: 8 rounds timed side by side in one run"
    for pb, pc in (({"run": "r1", "side": "baseline"}, {"run": "r2", "side": "candidate"}),
                   ({"run": "r1", "side": "baseline"}, {"run": "r1", "side": "baseline"}),
                   ({"side": "baseline"}, {"side": "candidate"}),
                   (None, {"run": "r1", "side": "candidate"}), (None, None)):
        cmp = docs(pb, pc)
        assert cmp.paired is False, (pb, pc)
        assert not any(n.startswith("paired by") for n in cmp.rows[0].notes)


def test_compare_docs_rows_notes_warnings_and_seed():
    ok = dict(rounds=6, round_process=[0, 0, 1, 1, 2, 2], processes=3)
    base = _doc(
        _entry("torch", None, status="error", error="boom", batch_size=4),
        _entry("torch", _samples(1), **ok),
        _entry("openvino", _samples(2), **ok),
        _entry("onnxruntime", None, model="n", status="skipped", reason="no GPU here"),
        status="interrupted")
    cand = _doc(
        _entry("torch", None, status="skipped", reason="no GPU here", batch_size=4),
        _entry("torch", _samples(3), **ok),
        _entry("openvino", None, status="error", error="crash"),
        _entry("onnxruntime", _samples(4), model="n", processes=1),
        _entry("onnxruntime", _samples(5), model="z"),
        status="complete")
    cmp = compare_docs(base, cand)
    assert cmp.skipped_both == ["m/torch/original/batch 4 (baseline error: boom; candidate skipped: no GPU here)"]
    assert [(r.label, r.verdict) for r in cmp.rows] == [
        ("m/openvino/original", "missing"), ("n/onnxruntime/original", "new"), ("z/onnxruntime/original", "new"),
        ("m/torch/original", "unchanged")]
    missing, new_n, new_z, same = cmp.rows
    assert (missing.baseline_ms, missing.candidate_ms) == (float(np.median(_samples(2))), None)
    assert missing.notes == ["candidate: error: crash"]
    assert (new_n.baseline_ms, new_n.candidate_ms) == (None, float(np.median(_samples(4))))
    assert new_n.notes == ["baseline: skipped: no GPU here"] and new_z.notes == []
    assert cmp.warnings == ["the baseline run was interrupted; its unfinished entries count as missing"]
    assert cmp.paired is False and cmp.env_diffs == []
    # the seed reaches the bootstrap: 0 by default, the same figures for the same seed
    assert same.ratio_ci == compare_docs(base, cand, seed=0).rows[-1].ratio_ci
    assert same.ratio_ci != compare_docs(base, cand, seed=1).rows[-1].ratio_ci
    assert compare_docs(base, cand, seed=5).rows[-1].ratio_ci == compare_docs(base, cand, seed=5).rows[-1].ratio_ci
    # one process per run: warned, with the count; the candidate's interruption named as the candidate's
    single = compare_docs(_doc(_entry("torch", _samples(1))), _doc(_entry("torch", _samples(3)), status="interrupted"))
    assert [w.split(" measured")[0] for w in single.warnings] == [
        "1 entry was", "the candidate run was interrupted; its unfinished entries count as missing"]
