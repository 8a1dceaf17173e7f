"""The results file of ``hvit-bench`` and its tables.

Shape (``schema: hvit-bench/1``)::

    {"schema": "hvit-bench/1", "schema_version": 2, "created": ..., "finished": ..., "status": "complete" | "running" | "interrupted",
     "command": "hvit-bench ...", "settings": {profile fields}, "environment": {...}, "warnings": [...],
     "results": [{"model", "backend", "variant", "status": "ok" | "skipped" | "error" | "interrupted",
                  "artifact_precision", "compute_precision", "threads", "iterations", "warmup", "samples_ms": [...], "mean_ms", "median_ms", "std_ms",
                  "min_ms", "max_ms", "p90_ms", "p99_ms", "median_ci_ms": [lo, hi], "ci_level",
                  "first_inference_ms", "load_ms", "round_medians_ms", "speedup_vs_torch", ...}, ...]}

The records are typed (:mod:`.schema`): the runner fills :class:`.schema.ResultsEntry` objects and
:func:`load_results` returns a :class:`.schema.ResultsDoc`. Statistics are computed from ``samples_ms`` exactly as stored (rounded to the nanosecond), so
``median_ms == numpy.median(samples_ms)`` holds for every entry.
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from ..errors import HvitError
from ..utils.io import atomic_write_json
from . import environment
from .profiles import COMPUTE_FORMS
from .schema import SCHEMA, SCHEMA_VERSION, ResultsDoc, ResultsEntry, as_doc, check
from .stats import speedup, summarize

# entry fields that must agree for two entries to be compared (besides model, backend, form)
SETTINGS_FIELDS = ("threads", "batch_size", "input_shape", "artifact_precision", "compute_precision", "device")


def entry_key(e: ResultsEntry) -> tuple[str, str, str, int]:
    return e.key


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class ResultsFile:
    """The document being written during a run (a :class:`.schema.ResultsDoc`); ``write()`` replaces the file
    atomically."""

    def __init__(self, path: Path | None, profile, command: str, child_env: dict, root: Path | None = None):
        self.path = Path(path) if path else None
        self.profile = profile
        self.doc = ResultsDoc(
            schema=SCHEMA, schema_version=SCHEMA_VERSION, tool="hvit-bench", created=now(), finished=None,
            status="running", command=command, profile=profile.name, settings=profile.settings(),
            environment=environment.collect(threads=profile.threads, child_env=child_env, root=root),
            warnings=[], results=[])
        self.pending: list[ResultsEntry] = []
        self._order: dict[int, int] = {}

    @property
    def warnings(self) -> list[str]:
        return self.doc.warnings

    @property
    def entries(self) -> list[ResultsEntry]:
        return self.doc.results

    def new_entry(self, model: str, backend: str, form: str, batch: int = 1) -> ResultsEntry:
        from ..runtimes import get_runtime

        p = self.profile
        e = ResultsEntry(
            model=model, backend=backend, form=form, status="pending", threads=p.threads, batch_size=batch,
            artifact_precision="int8" if form == "int8" else p.precision,
            # the session's own word replaces it; a bf16 entry claims nothing until a session has read it back
            compute_precision=None if form in COMPUTE_FORMS else get_runtime(backend).compute_precision,
            iterations=0, rounds=p.rounds, processes=p.processes)
        self.pending.append(e)
        self._order[id(e)] = len(self._order)
        return e

    def _publish(self, e: ResultsEntry) -> None:
        self.pending = [x for x in self.pending if x is not e]
        if not any(x is e for x in self.entries):
            self.entries.append(e)

    def skip(self, e: ResultsEntry, reason: str) -> None:
        e.status, e.reason = "skipped", reason
        self._publish(e)

    def fail(self, e: ResultsEntry, error: str, ns: list[int] | None = None,
             round_medians: list[float] | None = None) -> None:
        e.status, e.error = "error", error
        if ns:  # rounds finished before the failure are kept, marked as such
            self._fill(e, ns, round_medians or [])
            e.status = "error"
        self._publish(e)

    def update_samples(self, e: ResultsEntry, ns: list[int], round_medians: list[float], complete: bool,
                       round_process: list[int] | None = None) -> None:
        self._fill(e, ns, round_medians)
        if round_process is not None and self.profile.processes > 1:
            e.round_process = list(round_process)
        e.status = "ok" if complete else "incomplete"
        if complete:
            e.drop("rounds_done")
        self._publish(e)

    def _fill(self, e: ResultsEntry, ns: list[int], round_medians: list[float]) -> None:
        samples = [round(v / 1e6, 6) for v in ns]
        e.iterations = len(samples)
        e.rounds_done = len(round_medians)
        e.round_medians_ms = list(round_medians)
        for k, v in summarize(samples, self.profile.ci_level).items():
            setattr(e, k, v)
        e.samples_ms = samples
        if e.median_ms:
            e.images_per_s = images_per_s(e.batch, e.median_ms)

    def write(self) -> None:
        self.entries.sort(key=lambda e: self._order.get(id(e), len(self._order)))
        try:
            check(self.doc)  # the writer keeps to the schema the readers check
        except ValueError as e:
            raise RuntimeError(f"hvit-bench would write a results file that breaks its own schema: {e}") from None
        if self.path is not None:
            atomic_write_json(self.path, self.doc.to_json())

    def finish(self, interrupted: bool) -> None:
        for e in list(self.pending) + [x for x in self.entries if x.status == "incomplete"]:
            e.status = "interrupted"
            e.reason = ("interrupted after %d of %d rounds" % (e.rounds_done or 0, e.rounds or 1)
                        if e.samples_ms else "interrupted before any timed run finished")
            self._publish(e)
        add_speedups(self.entries)
        self.doc.status = "interrupted" if interrupted else "complete"
        self.doc.finished = now()
        try:
            import os

            self.doc.environment["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
        except (AttributeError, OSError):
            pass
        self.write()


def images_per_s(batch: int, median_ms: float) -> float:
    """Throughput of one timed call of ``batch`` images taking ``median_ms``."""
    return round(batch * 1e3 / median_ms, 3)


def is_sweep(doc: ResultsDoc) -> bool:
    """Whether the run asked for a batch sweep (``--batch`` other than 1), or holds an entry at another batch."""
    asked = (doc.settings or {}).get("batch") or [1]
    return list(asked) != [1] or any(e.batch != 1 for e in doc.results)


# ------------------------------------------------------------------------------------------------- reading


def load_results(path: str | Path) -> ResultsDoc:
    """A results file as a typed :class:`.schema.ResultsDoc` (older files migrated); raises HvitError with one
    line when it cannot be used."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HvitError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HvitError(f"{p}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise HvitError(f"{p}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise HvitError(f"{p}: not an hvit-bench results file (no \"results\" list)")
    for i, e in enumerate(doc["results"]):
        if not isinstance(e, dict) or not all(k in e for k in ("model", "backend")):
            raise HvitError(f"{p}: results[{i}] lacks model/backend")
    try:
        return check(doc)
    except ValueError as e:
        raise HvitError(f"{p}: {e}") from None


# -------------------------------------------------------------------------------------------------- ratios


def _reference_backend(backend: str) -> str | None:
    """The eager runtime an artifact runtime's speed-up is quoted against: torch on the same kind of device."""
    from ..runtimes import get_runtime, list_runtimes

    try:
        rt = get_runtime(backend)
    except HvitError:
        return None
    if rt.format is None:
        return None
    kind = "gpu" if rt.device_kind == "gpu" else "cpu"
    return next((r.name for r in list_runtimes() if r.format is None and r.device_kind == kind), None)


def add_speedups(entries: list[ResultsEntry]) -> None:
    """``speedup_vs_torch`` (torch eager median / this median, same model and form; torch-cuda for GPU
    backends; for ``int8`` the FP32 form it was quantized from), ``speedup_vs_original`` (original median /
    rewritten median, same model and backend) and, for ``int8`` entries, ``speedup_vs_fp32`` (the FP32 median of
    the form it was quantized from — ``fp32_variant``, rewritten unless the family has no recipe — / the INT8
    median, same model and backend), and ``speedup_vs_best_float`` (the fastest non-INT8 form of the same
    runtime — that FP32 form or a ``bf16`` entry — / the INT8 median), each with a block-bootstrap CI. Measured
    in the same run, so they are the numbers to quote."""
    ok = {e.key: e for e in entries if e.status == "ok" and e.samples_ms}  # (model, backend, form, batch)

    def ratio(ref: ResultsEntry, e: ResultsEntry, label: str) -> dict:
        s = speedup(ref.samples_ms, e.samples_ms, reference_rounds=ref.rounds, other_rounds=e.rounds,
                    reference_round_process=ref.round_process, other_round_process=e.round_process)
        return {"reference": label, **_rounded(s)}

    for (model, backend, form, batch), e in ok.items():  # each ratio at the same batch
        e.drop("speedup_vs_torch", "speedup_vs_original", "speedup_vs_fp32", "speedup_vs_best_float")
        fp32 = (e.fp32_form or "rewritten") if form == "int8" else form  # bf16: torch's bf16 autocast entry
        ref_b = _reference_backend(backend)
        ref = ok.get((model, ref_b, fp32, batch)) if ref_b else None
        if ref is not None:
            e.speedup_vs_torch = ratio(ref, e, f"{ref_b}/{fp32}")
        if form == "rewritten":
            orig = ok.get((model, backend, "original", batch))
            if orig is not None:
                e.speedup_vs_original = ratio(orig, e, f"{backend}/original")
        if form == "int8" or form in COMPUTE_FORMS:
            src = fp32 if form == "int8" else (e.fp32_form or "rewritten")
            base = ok.get((model, backend, src, batch))
            if base is not None:
                e.speedup_vs_fp32 = ratio(base, e, f"{backend}/{src}")
        if form == "int8":
            floats = [f for f in (ok.get((model, backend, g, batch)) for g in (fp32, *COMPUTE_FORMS)) if f is not None]
            if floats:
                best = min(floats, key=lambda f: f.median_ms)
                e.speedup_vs_best_float = ratio(best, e, f"{backend}/{best.form}")


def _rounded(s: dict) -> dict:
    return {"speedup": round(s["speedup"], 4), "ci": [round(v, 4) for v in s["ci"]]}


# --------------------------------------------------------------------------------------------------- tables

COLUMNS = ["model", "backend", "variant", "batch", "compute", "threads", "median ms", "95% CI", "images/s", "mean",
           "std", "p90", "p99", "first ms", "load s", "× torch", "× original", "× fp32", "status"]
CSV_KEYS = ["model", "backend", "variant", "status", "threads", "iterations", "warmup", "median_ms",
            "median_ci_lo_ms", "median_ci_hi_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p90_ms", "p99_ms",
            "first_inference_ms", "load_ms", "speedup_vs_torch", "speedup_vs_original", "speedup_vs_fp32", "reason",
            "artifact_precision", "compute_precision", "batch_size", "images_per_s",
            "speedup_vs_best_float"]   # columns only ever added at the end


def _f(v, digits=3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _x(s: dict | None) -> str:
    if not s:
        return ""
    return f"{s['speedup']:.2f} ({s['ci'][0]:.2f}–{s['ci'][1]:.2f})"


def _x_fp32(e: ResultsEntry) -> str:
    """× fp32, and for an INT8 entry whose runtime ran a non-INT8 form faster than FP32 (bf16), × that too."""
    text, best = _x(e.speedup_vs_fp32), e.speedup_vs_best_float
    if best and e.speedup_vs_fp32 and best.get("reference") != e.speedup_vs_fp32.get("reference"):
        text += f"; × {best['reference'].rsplit('/', 1)[-1]} {_x(best)}"
    return text


def _status(e: ResultsEntry) -> str:
    if e.status == "ok":
        return "ok*" if e.notes else "ok"
    return f"{e.status}: {e.why()}".strip()


def summary_rows(doc: ResultsDoc | dict) -> list[dict]:
    """One row per entry; the batch and images/s columns are filled only when the run swept batches (a batch-1
    table keeps its columns)."""
    rows = []
    doc = as_doc(doc)
    sweep = is_sweep(doc)
    for e in doc.results:
        ci = e.median_ci_ms
        rows.append({
            "model": e.model, "backend": e.backend, "variant": e.form, "batch": str(e.batch) if sweep else "",
            "compute": e.compute_precision or "", "threads": e.threads, "median ms": _f(e.median_ms),
            "95% CI": f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "",
            "images/s": _f(e.images_per_s, 1) if sweep else "",
            "mean": _f(e.mean_ms), "std": _f(e.std_ms), "p90": _f(e.p90_ms), "p99": _f(e.p99_ms),
            "first ms": _f(e.first_inference_ms, 1),
            "load s": _f(e.load_ms / 1e3 if e.load_ms is not None else None, 2),
            "× torch": _x(e.speedup_vs_torch), "× original": _x(e.speedup_vs_original),
            "× fp32": _x_fp32(e), "status": _status(e),
        })
    return rows


def _csv(doc: ResultsDoc) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for e in doc.results:
        row = e.to_json()
        row["median_ci_lo_ms"], row["median_ci_hi_ms"] = e.median_ci_ms or (None, None)
        for k in ("speedup_vs_torch", "speedup_vs_original", "speedup_vs_fp32", "speedup_vs_best_float"):
            row[k] = (getattr(e, k) or {}).get("speedup")
        row["reason"] = e.why()
        w.writerow(row)
    return buf.getvalue()


def _footer(doc: ResultsDoc, rows: list[dict], fmt: str) -> list[str]:
    from tabulate import tabulate

    foot = ["", "× torch / × original / × fp32: how many times faster than torch eager (a bf16 entry: torch eager "
                "under bf16 autocast) / the original form / the FP32 form an int8 entry was quantized from or a bf16 "
                "entry computes in bf16, median ratio from this run (95% block-bootstrap CI); an int8 entry whose "
                "runtime ran bf16 faster than FP32 shows × bf16 too (what INT8 buys over its best float form)."
            ] if any(r["× torch"] or r["× original"] or r["× fp32"] for r in rows) else []
    if any(r["compute"] for r in rows):
        foot += ["", "compute: the precision each runtime session computed in (fp32, bf16, fp16), as the runtime "
                     "read it back, apart from what the artifact holds (an int8 entry's artifact is int8; a bf16 "
                     "entry's is the FP32 artifact)."]
    notes = [f"- {e.label}: {n}" for e in doc.results for n in e.notes]
    if notes:
        foot += ["", "Notes:"] + notes
    for e in doc.results:
        if e.op_profile:
            ops = [[o["op"], f"{o['ms_per_run']:.3f}", f"{o['share']:.1%}", f"{o['calls_per_run']:g}"]
                   for o in e.op_profile]
            foot += ["", f"Top operators: {e.label}",
                     tabulate(ops, headers=["op type", "ms/run", "share", "calls/run"],
                              tablefmt="github" if fmt == "md" else "simple", disable_numparse=True)]
    return foot


def format_table(doc: ResultsDoc | dict, fmt: str = "table") -> str:
    """The summary as a terminal table, Markdown, CSV or JSON (JSON and CSV carry no raw samples)."""
    doc = as_doc(doc)
    if fmt == "json":
        slim = [{k: v for k, v in e.to_json().items() if k not in ("samples_ms", "warmup_detail")}
                for e in doc.results]
        return json.dumps({"environment": doc.environment, "results": slim}, indent=2, default=str)
    if fmt == "csv":
        return _csv(doc)
    from tabulate import tabulate

    rows = summary_rows(doc)
    if not rows:
        return "(no results)"
    used = [c for c in COLUMNS if any(r[c] not in ("", None) for r in rows)]
    table = [[r[c] for c in used] for r in rows]
    text = tabulate(table, headers=used, tablefmt="github" if fmt == "md" else "simple", disable_numparse=True)
    foot = _footer(doc, rows, fmt)
    return text + ("\n" + "\n".join(foot) if foot else "")


def exit_code(doc: ResultsDoc | dict) -> int:
    """0 when every entry ran or was skipped for lack of hardware; 1 when any failed; 130 when interrupted."""
    doc = as_doc(doc)
    if doc.status == "interrupted":
        return 130
    return 1 if any(e.status not in ("ok", "skipped") for e in doc.results) else 0


def failed_labels(doc: ResultsDoc) -> list[str]:
    return [e.label for e in doc.results if e.status not in ("ok", "skipped")]
