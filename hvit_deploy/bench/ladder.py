"""``--precision auto``: the precision ladder of each runtime, measured in one interleaved run, and the pick.

For each runtime asked for, every rung of :data:`hvit_deploy.export.ladder.RUNGS` that can be built here is
timed side by side with the runtime's FP32 rung in ONE ``hvit-bench`` run (its forms are the entries of one
model, so they take turns round by round over several processes), each rung having passed its gate first (INT8:
the accuracy gate on held-out images against eager FP32, :mod:`hvit_deploy.quantize.gate`; an artifact that
fails it is never written, so it is never timed; FP32: the export's validation against eager PyTorch; a form of
its own, e.g. BF16, records its own gate on its entry). :func:`build_ladders` reads the run's results: each
rung's median ratio to FP32 with its block-bootstrap interval (:func:`.stats.speedup`, as ``speedup_vs_fp32``),
its gate figures and size, and the pick: the fastest rung that passed its gate and ran. A rung that cannot be
built here is listed with the reason (no calibration images, a CPU without BF16, a form not in this build).

INT8 that is less than :data:`~hvit_deploy.export.ladder.INT8_PAYS` times faster than FP32 gets
``recommended: false`` and the sentence :func:`int8_verdict` writes ("INT8 does not pay here: ..."); it is not
picked even when it is the fastest rung that passed (it costs accuracy for a gain under that bar).

Across runtimes, :func:`fastest_here` names each model's fastest pick and the next one (the runtimes of a model
are timed in the same interleaved rounds): the artifact to ship for this machine.
"""
from __future__ import annotations

from typing import Iterable

from ..export.ladder import INT8_PAYS, Ladder, LadderRung, RungSpec, rungs_of
from ..utils.cpu import BF16_FLAGS, VNNI_FLAGS, cpu_flags, has_bf16, has_vnni
from .profiles import FORM_NAMES
from .schema import ResultsDoc, ResultsEntry
from .stats import speedup

SHOWN_FLAGS = ("avx2", "avx512f", "avx512_fp16", *VNNI_FLAGS, *BF16_FLAGS)


def cpu_summary() -> dict:
    """The CPU facts a ladder depends on: its model and the flags of the instructions the rungs use."""
    from .environment import cpu_model

    flags = cpu_flags()
    return {"model": cpu_model(), "flags": [f for f in SHOWN_FLAGS if f in flags], "vnni": has_vnni(),
            "bf16": has_bf16()}


def cpu_words(cpu: dict) -> str:
    flags = ", ".join(cpu.get("flags") or []) or "no AVX2/AVX-512 flags"
    lacks = [w for w, k in (("VNNI", "vnni"), ("BF16", "bf16")) if not cpu.get(k)]
    return f"{cpu.get('model') or 'unknown CPU'} ({flags}{'; no ' + ', no '.join(lacks) if lacks else ''})"


def why_not(rung: RungSpec, *, calibration: bool) -> str | None:
    """Why ``rung`` cannot be built here, or None."""
    if rung.needs == "cpu_bf16" and not has_bf16():
        return f"no BF16 on this CPU (none of {', '.join(BF16_FLAGS)} in its flags)"
    if rung.form not in FORM_NAMES:  # a rung whose hvit-bench form this build does not have
        return f"the {rung.form} form is not in this build of hvit-bench"
    if rung.needs == "calibration" and not calibration:
        return "INT8 needs --calibration DIR (images to calibrate and to gate on)"
    return None


def plan_rungs(runtime: str, *, calibration: bool) -> tuple[list[RungSpec], list[LadderRung]]:
    """(the rungs of ``runtime`` built here, the others as ``not_built`` records with the reason)."""
    built, left = [], []
    for r in rungs_of(runtime):
        why = why_not(r, calibration=calibration)
        if why is None:
            built.append(r)
        else:
            left.append(LadderRung(precision=r.precision, form=r.form, status="not_built", why=why))
    return built, left


def rung_form(model: str, rung: RungSpec) -> str:
    """The form that times ``rung`` for ``model``: FP32 is the rewritten form, or the model as written for a
    family without an export recipe (a --plugin model, which INT8 quantizes as written too)."""
    from .artifacts import fp32_form

    return fp32_form(model) if rung.form == "rewritten" else rung.form


def ladder_forms(runtimes: Iterable[str], models: Iterable[str], *, calibration: bool) -> list[str]:
    """The hvit-bench forms (``--variants``) that time every buildable rung of ``runtimes``, FP32's first."""
    forms: list[str] = []
    rungs = [r for rt in runtimes for r in plan_rungs(rt, calibration=calibration)[0]]
    for r in sorted(rungs, key=lambda r: r.form != "rewritten"):
        forms += [rung_form(m, r) for m in models]
    return list(dict.fromkeys(forms)) or ["rewritten"]


def int8_verdict(ratio: float, ci: list[float] | None, runtime: str, threads: int | None, cpu: dict) -> str:
    interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    shown = f"{ratio:.2f}" if round(ratio, 2) < INT8_PAYS else f"{ratio:.3f}"  # 1.196 is not shown as 1.20
    return (f"INT8 does not pay here: {shown}× FP32{interval} on {runtime}, {threads} thread"
            f"{'' if threads == 1 else 's'}, {cpu_words(cpu)} (recommended only from {INT8_PAYS:g}×)")


def _gate(e: ResultsEntry) -> tuple[bool | None, dict | None]:
    """Whether the timed artifact passed its gate, and the figures: INT8's accuracy gate, a form's own
    ``precision_gate`` record (BF16), else the export validation against eager PyTorch (None for torch eager:
    the reference)."""
    art = e.artifact or {}
    q = (art.get("quantization") or {}).get("gate")
    if q:
        return q.get("passed"), q.get("final")
    # a compute-precision form's own gate before timing (bf16: ``precision_gate``, with ``passed`` and ``figures``)
    own = getattr(e, "precision_gate", None) or (e.model_extra or {}).get("precision_gate")
    if isinstance(own, dict):
        return own.get("passed"), own.get("figures") or own
    v = art.get("validation")
    if v:
        return v.get("passed", True), v
    return (True, None) if art else (None, None)


def _measured(spec: RungSpec, e: ResultsEntry | None, ref: ResultsEntry | None) -> LadderRung:
    rung = LadderRung(precision=spec.precision, form=spec.form, status="failed")
    if e is None:
        rung.status, rung.why = "not_built", "not in the run"
        return rung
    art = e.artifact or {}
    rung.artifact_precision, rung.compute_precision = e.artifact_precision, e.compute_precision
    rung.path, rung.size_bytes = art.get("path"), art.get("size_bytes")
    if e.status != "ok":
        gate_failed = "gate failed" in (e.error or "")
        rung.status = "gate_failed" if gate_failed else ("not_built" if e.status == "skipped" else "failed")
        rung.why = e.why() or e.status
        return rung
    rung.median_ms, rung.median_ci_ms = e.median_ms, e.median_ci_ms
    rung.gate_passed, rung.gate = _gate(e)
    if rung.gate_passed is False:
        rung.status, rung.why = "gate_failed", "its gate failed"
        return rung
    rung.status = "passed"
    if rung.gate_passed is None and spec.precision != "fp32":  # FP32 eager is the reference itself
        rung.status, rung.why = "failed", "ran, but its entry has no gate record: only a gated rung is picked"
    if ref is not None and ref.status == "ok" and ref.samples_ms and e.samples_ms:
        s = speedup(ref.samples_ms, e.samples_ms, reference_rounds=ref.rounds, other_rounds=e.rounds,
                    reference_round_process=ref.round_process, other_round_process=e.round_process)
        rung.ratio_vs_fp32, rung.ratio_ci = round(s["speedup"], 4), [round(v, 4) for v in s["ci"]]
    elif spec.precision != "fp32":
        rung.why = "no FP32 entry to compare with in this run"
    return rung


def _pick(lad: Ladder) -> None:
    """The fastest rung that passed and ran (FP32 when nothing beats it), INT8 only where it pays (it costs
    accuracy: a gain under INT8_PAYS is not worth it); the others say why they were not picked."""
    timed = [r for r in lad.rungs if r.status == "passed" and r.ratio_vs_fp32 is not None]
    eligible = [r for r in timed if r.recommended is not False]
    if not eligible:
        return
    best = max(eligible, key=lambda r: r.ratio_vs_fp32)
    best.status, lad.pick, lad.pick_path = "picked", best.precision, best.path
    lad.pick_note = uncertain_pick(best)
    for r in timed:
        if r is best:
            continue
        r.why = (f"passed over: INT8 does not pay here ({r.ratio_vs_fp32:.2f}× FP32, below {INT8_PAYS:g}×)"
                 if r.recommended is False else
                 f"passed over: {r.ratio_vs_fp32:.2f}× FP32 against {best.precision}'s {best.ratio_vs_fp32:.2f}×")


def uncertain_pick(r: LadderRung) -> str | None:
    """The pick stands on the point estimate; say so when its interval also holds "no faster than FP32"."""
    if r.precision == "fp32" or not r.ratio_ci or r.ratio_ci[0] > 1.0:
        return None
    lo, hi = r.ratio_ci
    return (f"not settled: {r.precision}'s {r.ratio_vs_fp32:.2f}× FP32 has the interval [{lo:.2f}, {hi:.2f}], "
            f"which holds 1.0 (no faster); more --rounds or a quieter machine settle it")


def _int8(lad: Ladder) -> None:
    r = lad.rung("int8")
    if r is None or r.ratio_vs_fp32 is None:
        return
    r.recommended = r.ratio_vs_fp32 >= INT8_PAYS
    if not r.recommended:
        r.verdict = int8_verdict(r.ratio_vs_fp32, r.ratio_ci, lad.runtime, lad.threads, lad.cpu)


def build_ladders(doc: ResultsDoc, runtimes: Iterable[str], *, calibration: bool,
                  results: str | None = None) -> list[Ladder]:
    """One :class:`Ladder` per (model, runtime) of the run ``doc`` (see the module docstring)."""
    by = {e.key[:3]: e for e in doc.results if e.batch == 1}  # a ladder is of batch-1 entries
    settings, cpu = doc.settings or {}, cpu_summary()
    out = []
    for model in dict.fromkeys(e.model for e in doc.results):
        for rt in runtimes:
            built, left = plan_rungs(rt, calibration=calibration)
            if not built:
                continue
            ref = by.get((model, rt, rung_form(model, built[0])))
            lad = Ladder(model=model, runtime=rt, format=built[0].format, threads=settings.get("threads"),
                         iterations=settings.get("iterations"), rounds=settings.get("rounds"),
                         processes=settings.get("processes"), cpu=cpu, results=results,
                         rungs=[_measured(s, by.get((model, rt, rung_form(model, s))), ref) for s in built] + left)
            _int8(lad)
            _pick(lad)
            out.append(lad)
    return out


def int8_verdicts(doc: ResultsDoc) -> list[str]:
    """Plain ``hvit-bench --variants ... int8``: the verdict of every int8 entry measured below
    :data:`INT8_PAYS` × its FP32 form in the same run."""
    out, cpu = [], None
    for e in doc.results:
        s = e.speedup_vs_fp32
        if e.form == "int8" and e.status == "ok" and s and s["speedup"] < INT8_PAYS:
            cpu = cpu or cpu_summary()
            out.append(f"{e.model}: " + int8_verdict(s["speedup"], s.get("ci"), e.backend, e.threads, cpu))
    return out


def _x(r: LadderRung) -> str:
    if r.ratio_vs_fp32 is None:
        return "-"
    ci = f" [{r.ratio_ci[0]:.2f}, {r.ratio_ci[1]:.2f}]" if r.ratio_ci else ""
    return f"{r.ratio_vs_fp32:.2f}{ci}"


def _gate_words(r: LadderRung) -> str:
    g = r.gate or {}
    if "top1_agreement_within_tie" in g:
        return f"top-1 {g['top1_agreement_within_tie']:.3f}, cos {g.get('mean_cosine', float('nan')):.4f}"
    if "min_cosine" in g:
        return f"cos {g['min_cosine']:.5f}" + (f", top-1 {g['top1']:.2f}" if g.get("top1") is not None else "")
    return "reference" if r.status in ("picked", "passed") and r.precision == "fp32" else "-"


def fastest_here(ladders: list[Ladder], entries: Iterable[ResultsEntry] = ()) -> list[str]:
    """Across runtimes: for each model (and thread count) with more than one runtime, the fastest of the runtimes'
    picks and the next one. Each runtime's pick already is its fastest rung that passed (INT8 only where it pays);
    the runtimes of a model were timed in the same interleaved rounds, so their medians compare. With the run's
    ``entries`` (its results), the ratio gets its block-bootstrap interval (one that holds 1: the two are as fast)."""
    by = {(*e.key[:3], e.threads): e for e in entries if e.batch == 1}
    groups: dict[tuple, list] = {}
    for lad in ladders:
        r = lad.rung(lad.pick) if lad.pick else None
        if r is not None and r.median_ms:
            groups.setdefault((lad.model, lad.threads), []).append((r.median_ms, lad.runtime, r))
    lines = []
    for (model, threads), cands in groups.items():
        if len(cands) < 2:
            continue
        (ms, rt, r), (ms2, rt2, r2) = sorted(cands, key=lambda c: c[0])[:2]
        at = f", {threads} thread{'' if threads == 1 else 's'}" if threads else ""
        ci = ""
        a, b = by.get((model, rt2, r2.form, threads)), by.get((model, rt, r.form, threads))
        if a is not None and b is not None and a.samples_ms and b.samples_ms:
            sp = speedup(a.samples_ms, b.samples_ms, reference_rounds=a.rounds, other_rounds=b.rounds,
                         reference_round_process=a.round_process, other_round_process=b.round_process)
            lo, hi = sp["ci"]
            ci = f" [{lo:.2f}, {hi:.2f}]" + ("; not settled: the interval holds 1" if lo <= 1.0 else "")
        lines.append(f"{model}: fastest here{at}: {rt} {r.precision}, {ms:.2f} ms; next {rt2} {r2.precision}, "
                     f"{ms2:.2f} ms ({ms2 / ms:.2f}× as long{ci})")
    return lines


def format_ladders(ladders: list[Ladder], fmt: str = "table", entries: Iterable[ResultsEntry] = ()) -> str:
    """The ladders as one table (``md``: Markdown), then the INT8 verdicts and the CPU it ran on."""
    from tabulate import tabulate

    rows = []
    for lad in ladders:
        for r in lad.rungs:
            rows.append([lad.model, lad.runtime, lad.threads, r.precision, r.compute_precision or "-",
                         f"{r.median_ms:.3f}" if r.median_ms is not None else "-", _x(r), _gate_words(r),
                         f"{r.size_bytes / 1e6:.1f}" if r.size_bytes else "-",
                         "PICK" if r.status == "picked" else r.status, (r.why or "")[:90]])
    text = tabulate(rows, headers=["model", "runtime", "threads", "rung", "compute", "median ms", "× fp32 [95% CI]",
                                   "gate", "MB", "status", "why"],
                    tablefmt="github" if fmt == "md" else "simple", disable_numparse=True)
    foot = [f"{lad.model}: {r.verdict}" for lad in ladders for r in lad.rungs if r.verdict]  # one per model and runtime
    foot += fastest_here(ladders, entries)
    if ladders:
        lad = ladders[0]
        foot.append(f"CPU: {cpu_words(lad.cpu)}; {lad.iterations} runs per rung in {lad.rounds} interleaved "
                    f"round(s) over {lad.processes} process(es); × fp32: FP32 median / rung median, same run")
    return text + ("\n" + "\n".join(foot) if foot else "")
