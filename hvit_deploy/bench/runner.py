"""The coordinator of ``hvit-bench``: plans the entries, runs each in its own worker process, writes results.

Every (model, form, backend) entry runs in a fresh worker process (:mod:`.worker`) whose environment carries
the thread settings before any runtime is imported, so a crash, a leaked thread pool or a runtime's global state
cannot reach another entry. With ``rounds > 1`` the workers of one model stay alive together and take turns,
``iterations / rounds`` timed runs each per round, the order reversed every other round, so slow drift of a
shared machine lands on every entry of that model alike (their ratios are what the project reports).

The results file is rewritten atomically after every finished entry or round: Ctrl-C, SIGTERM or a crashing
worker leave every completed measurement on disk.

Parts: :mod:`.process` starts and talks to worker processes; :mod:`.artifacts` exports or reuses what a runtime
times; :class:`.request.BenchRequest` plans the entries (its ``jobs()``); this module runs them (one :class:`Job`
per entry, one :class:`Side` per checkout timed): :class:`Runner`: probe → artifacts → per model, setup and interleaved rounds → results.
"""
from __future__ import annotations

import contextlib
import signal
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import HvitError
from ..runtimes import RuntimeSpec
from . import artifacts
from . import messages as m
from .environment import available_cores
from .process import PKG_ROOT, Worker, WorkerError, worker_env  # noqa: F401  (Worker, worker_env: for scripts)
from .profiles import COMPUTE_FORMS
from .request import BenchRequest
from .results import ResultsFile
from .schema import ResultsEntry
from .stats import round_sizes

Plan = BenchRequest  # the name scripts used before the request was typed


@dataclass
class Side:
    """One code version being timed: this checkout ("head") or, with --against, another one ("base")."""

    name: str
    root: Path
    env: dict
    results: ResultsFile
    own: bool


@dataclass
class Job:
    """One entry being measured."""

    model: str
    form: str
    backend: str
    entry: ResultsEntry
    side: Side | None = None
    batch: int = 1                       # images per timed call (one size of a batch sweep)
    worker: Worker | None = None
    ns: list[int] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    round_process: list[int] = field(default_factory=list)
    art: dict | Exception | None = None
    proc_idx: int = 0
    done: bool = False
    # the paired design (--against, profile pair_block > 0): the head job's worker also loads the base job's
    # artifact and times both in alternating blocks; the base job then has no worker of its own
    partner: "Job | None" = None
    paired_into: "Job | None" = None

    @property
    def label(self) -> str:
        tag = f" [{self.side.name}]" if self.side is not None and not (self.side.own and self.side.name == "this") else ""
        at = f"/batch {self.batch}" if self.batch != 1 else ""
        return f"{self.model}/{self.backend}/{self.form}{at}{tag}"

    @property
    def dynamic(self) -> bool:
        """Whether an artifact runtime times the dynamic-batch export (every batch above 1 of a sweep; batch 1
        keeps the static export a batch-1 run times, so its entries compare with those of any batch-1 run)."""
        return self.batch != 1


class Runner:
    def __init__(self, plan: BenchRequest, *, progress: bool = True, log: Callable[[str], None] | None = None,
                 artifacts: dict | None = None):
        self.plan = plan
        # (model, format, form) -> an artifact made elsewhere (its manifest, as bench-artifact.json has it) or
        # the error that kept it from being made: timed as it is, not exported again (hvit-export --precision auto)
        self.preset = dict(artifacts or {})
        self.p = plan.profile
        self.show_progress = progress
        self._log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.env = worker_env(self.p.threads, plan.plugins)
        self.log_dir = Path(tempfile.mkdtemp(prefix="hvit-bench-logs-"))
        self.results = ResultsFile(plan.out, plan.profile, plan.command, self.env)
        self.sides = [Side("this", PKG_ROOT, self.env, self.results, own=True)]
        if plan.against is not None:
            import uuid

            root = Path(plan.against).resolve()
            env = worker_env(self.p.threads, plan.plugins, root=root)
            other = ResultsFile(plan.against_out, plan.profile, plan.command, env, root=root)
            self.sides = [Side("head", PKG_ROOT, self.env, self.results, own=True),
                          Side("base", root, env, other, own=False)]
            run_id = uuid.uuid4().hex[:12]
            for side in self.sides:
                side.results.doc.pairing = {"run": run_id, "side": side.name, "root": str(side.root)}
        self.active: list[Worker] = []
        self.bar = None
        self.interrupted = False
        self.speed: dict[tuple[str, str], float] = {}   # (model, entry label) -> ms per run, from warm-up
        self.planned: list[tuple[str, str]] = []
        self._told_s: float | None = None

    # -- logging -------------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            self._log(msg)

    # -- helpers -------------------------------------------------------------------------------------------
    def _spawn(self, label: str, side: Side | None = None) -> Worker:
        side = side or self.sides[0]
        # another checkout's workers start in it, so `python -m` finds its hvit_deploy before any other
        w = Worker(side.env, label, self.log_dir, cwd=None if side.own else side.root)
        self.active.append(w)
        return w

    def _release(self, w: Worker | None, kill: bool = False) -> None:
        if w is None:
            return
        (w.kill if kill else w.close)()
        if w in self.active:
            self.active.remove(w)

    def _one_shot(self, label: str, cmd: m.Command, timeout: float, side: Side | None = None,
                  on_note: Callable[[str], None] | None = None) -> m.Reply:
        w = self._spawn(label, side)
        try:
            msg = w.request(cmd, timeout, on_note=on_note)
        finally:
            self._release(w)
        return msg

    # -- phases --------------------------------------------------------------------------------------------
    def probe(self) -> dict[str, str | None]:
        """None or the reason each backend cannot run here; GPU checks run in a probe process."""
        from ..runtimes import get_runtime

        out: dict[str, str | None] = {}
        undecided = []
        for b in self.plan.backends:
            decided, reason = get_runtime(b).quick_check()
            if decided:
                out[b] = reason
            else:
                undecided.append(b)
        if undecided:
            try:
                msg = self._one_shot("probe", m.ProbeCmd(backends=undecided), timeout=300)
            except WorkerError as e:
                msg = m.Failed(error=str(e))
            if isinstance(msg, m.Probed):
                out.update(msg.available)
            else:
                out.update({b: f"availability check failed: {m.describe(msg)}" for b in undecided})
        return out

    def prepare_artifacts(self, model: str, jobs: list["Job"], cache: dict, side: Side) -> None:
        """Fill ``cache[(side, model, fmt, form, dynamic)]`` with the artifact manifest, or the error, for every
        job of ``model``; what the cache lacks is exported in one child process (the model is built once).
        Another checkout's artifacts are always asked of its own export process (its sources make its cache
        keys)."""
        missing: list[tuple] = []
        forms: list[tuple[str, str, bool]] = []      # (fmt, form, dynamic) of each request in ``missing``
        for job in jobs:
            fmt = artifacts.runtime_format(job.backend)
            k = (side.name, model, fmt, job.form, job.dynamic)
            if fmt is None or k in cache or (fmt, job.form, job.dynamic) in forms:
                continue
            if side.own and not job.dynamic and (model, fmt, job.form) in self.preset:
                cache[k] = self.preset[(model, fmt, job.form)]
                continue
            try:
                request, found = self._cached_artifact(model, fmt, job.form, side, job.dynamic)
            except HvitError as e:
                cache[k] = WorkerError(str(e))
                continue
            if found:
                cache[k] = found
            else:
                missing.append(request)
                forms.append((fmt, job.form, job.dynamic))
        if missing:
            self._export(model, missing, forms, cache, side)

    def _cached_artifact(self, model: str, fmt: str, form: str, side: Side,
                         dynamic: bool = False) -> tuple[tuple, dict | None]:
        """The export request for one artifact, and its cached manifest when this checkout has it."""
        rewrite, precision = artifacts.form_spec(model, form)
        request, quant = self._artifact_request(model, fmt, rewrite, precision, dynamic)
        if not side.own:
            return request, None
        names = artifacts.rewrite_names(model, fmt, rewrite)
        key, _ = artifacts.artifact_key(model, fmt, rewrite=rewrite, rewrites=names, input_size=self.p.input_size,
                                        batch_size=self.p.batch_size, precision=precision,
                                        checkpoint=self.plan.checkpoints.get(model), quantization=quant,
                                        dynamic_batch=dynamic)
        info = artifacts.lookup(model, fmt, rewrite, key, precision, dynamic)
        if info:
            info["cached"] = True
        return request, info

    def _export(self, model: str, missing: list[tuple], forms: list[tuple[str, str, bool]], cache: dict,
                side: Side) -> None:
        what = ", ".join(f"{fmt} ({v}{', dynamic batch' if dyn else ''})" for fmt, v, dyn in forms)
        self.log(f"{model}: exporting {what}{'' if side.own else f' with {side.root}'} ...")
        cmd = m.ExportCmd(model=model, requests=[list(r) for r in missing], input_size=self.p.input_size,
                          checkpoint=self.plan.checkpoints.get(model), batch_size=self.p.batch_size,
                          precision=self.p.precision)
        try:
            msg = self._one_shot(f"export-{model}-{side.name}", cmd, timeout=self.p.timeout_s, side=side,
                                 on_note=lambda line: self.log("  " + line))
        except WorkerError as e:
            msg = m.Failed(error=str(e))
        for i, (fmt, form, dyn) in enumerate(forms):
            k = (side.name, model, fmt, form, dyn)
            if not isinstance(msg, m.Exported):
                cache[k] = WorkerError(f"export to {fmt} failed: {m.describe(msg)}")
                continue
            r = msg.results[i]
            if r.ok:
                cache[k] = r.info
                self.log(f"  {fmt}: exported and validated in {r.info.get('export_s', 0):.1f} s → {r.info['path']}")
            else:
                what = "dynamic-batch export" if dyn else "export"
                cache[k] = WorkerError(f"{what} to {fmt} failed: {r.error}")

    def _artifact_request(self, model: str, fmt: str, rewrite: bool, precision: str,
                          dynamic: bool = False) -> tuple[tuple, dict | None]:
        """The export request for one artifact, and for INT8 the fields its cache key adds (calibration digest,
        size, held-out set, recipe quantization section). ``dynamic``: the batch sweep's dynamic-batch export."""
        dyn = {"dynamic_batch": True} if dynamic else {}
        if precision == "fp32":
            return ((fmt, rewrite, dyn) if dyn else (fmt, rewrite)), None
        p = self.p
        quant = artifacts.quantization_fields(model, fmt, calibration=p.calibration,
                                              calibration_size=p.calibration_size, eval_data=p.eval_data)
        opts = {"precision": precision, **dyn}
        if fmt in artifacts.NEEDS_CALIBRATION:
            opts.update(calibration=p.calibration, calibration_size=p.calibration_size, eval_data=p.eval_data)
        return (fmt, rewrite, opts), quant

    def check_side(self, side: Side) -> None:
        """Another checkout must have a worker that speaks this protocol."""
        from .worker import PROTOCOL

        try:
            msg = self._one_shot(f"hello-{side.name}", m.HelloCmd(), timeout=300, side=side)
        except WorkerError as e:
            raise HvitError(f"--against {side.root}: its hvit-bench worker does not start: {e}") from None
        if not isinstance(msg, m.Hello) or msg.protocol != PROTOCOL:
            got = msg.protocol if isinstance(msg, m.Hello) else "none"
            raise HvitError(f"--against {side.root}: its hvit-bench worker speaks another protocol "
                            f"({got}, this one {PROTOCOL}); use a checkout with the same hvit-bench")
        pkg = Path(msg.package).resolve()
        if side.root not in pkg.parents:
            raise HvitError(f"--against {side.root}: its worker imported hvit_deploy from {pkg.parent}, not from "
                            "that checkout")
        side.results.doc.environment["versions"]["hvit-deploy"] = msg.version

    def artifact(self, job: "Job", cache: dict) -> dict | None:
        fmt = artifacts.runtime_format(job.backend)
        if fmt is None:
            if job.form == artifacts.INT8_FORM:
                raise _Skip(f"{job.backend} runs the PyTorch module, which has no INT8 form here; the int8 variant "
                            "is timed on onnxruntime and openvino (and weight-only on coreml)")
            return None
        got = cache[(job.side.name, job.model, fmt, job.form, job.dynamic)]
        if isinstance(got, Exception):
            raise got
        return got

    def setup_cmd(self, job: Job, art: dict | None) -> m.SetupCmd:
        from ..factory import resolve_input_size
        from ..registry import get_spec

        size = resolve_input_size(get_spec(job.model), self.p.input_size)
        compute = job.form if job.form in COMPUTE_FORMS else None
        rewrite = artifacts.form_spec(job.model, job.form)[0] if compute else job.form == "rewritten"
        spec = RuntimeSpec(model=job.model, backend=job.backend, form=job.form, rewrite=rewrite,
                           threads=self.p.threads, batch_size=job.batch, input_size=self.p.input_size,
                           input_shape=[job.batch, *size], checkpoint=self.plan.checkpoints.get(job.model),
                           artifact=art["path"] if art else None, compute_precision=compute)
        return m.SetupCmd(spec=spec, warmup=m.WarmupConfig(**self.p.warmup.model_dump()),
                          artifact_b=job.partner.art["path"] if job.partner is not None else None)

    def precision_gate(self, job: Job) -> None:
        """A compute-precision entry (bf16) checked against eager FP32 with the INT8 gate on held-out images, in
        its own process (:func:`.worker.precision_gate`), before it is timed: the figures go into the entry
        (``precision_gate``); a failed gate raises, and the entry fails with them. Another checkout's entries are
        gated by this checkout's worker (its model code builds the reference), which a note says."""
        own = self.sides[0]
        cmd = m.GateCmd(spec=self.setup_cmd(job, job.art).spec, eval_data=self.p.eval_data,
                        calibration=self.p.calibration)
        self.log(f"{job.label}: {job.form} accuracy gate against eager FP32 ...")
        msg = self._one_shot(f"gate-{job.label}", cmd, timeout=self.p.timeout_s, side=own)
        if isinstance(msg, m.Skipped):
            raise _Skip(msg.reason)
        if not isinstance(msg, m.Gated):
            raise WorkerError(f"{job.form} accuracy gate: {m.describe(msg)}")
        check = msg.check
        job.entry.precision_gate = check
        job.entry.compute_precision = check.get("compute_precision")
        if job.side is not None and not job.side.own:
            job.entry.note("precision gate run with this checkout's code (the model it builds is the reference)")
        fig = check["figures"]
        self.log(f"  gate {'passed' if check['passed'] else 'FAILED'}: top-1 {fig['top1_agreement_within_tie']:.3f}"
                 f" (within ties), mean cosine {fig['mean_cosine']:.5f} on {fig['images']} image(s); computed in "
                 f"{check.get('compute_precision')}")
        if not check["passed"]:
            from ..quantize.compute import failure_text

            raise HvitError(failure_text(check))

    def setup_job(self, job: Job, art: dict | None, first: bool = True) -> None:
        job.worker = self._spawn(job.label, job.side)
        self.log(f"{job.label}: loading ..." if first else
                 f"{job.label}: process {job.proc_idx + 1}/{self.p.processes}: loading ...")

        def on_event(msg):
            if isinstance(msg, m.Loaded):
                self.log(f"  loaded in {msg.load_ms / 1e3:.2f} s, first inference {msg.first_inference_ms:.1f} ms; "
                         "warming up ...")

        msg = job.worker.request(self.setup_cmd(job, art), self.p.timeout_s, on_event=on_event)
        if isinstance(msg, m.Skipped):
            raise _Skip(msg.reason)
        if not isinstance(msg, m.Ready):
            raise WorkerError(m.describe(msg))
        wu = msg.warmup
        pairs = [(job, msg)] + ([(job.partner, msg.partner)] if job.partner is not None else [])
        for j, own in pairs:  # a paired base entry was loaded and warmed in the same process
            j.entry.process_runs.append({
                "pid": msg.pid, "load_ms": own.load_ms, "first_inference_ms": own.first_inference_ms,
                "warmup": wu.runs + 1, "warmup_settled": wu.settled})
        if not first:
            if not wu.settled:
                job.entry.note(f"process {job.proc_idx + 1}: warm-up did not settle: {wu.not_settled_because or ''}")
            return
        for j, own in pairs:
            self._describe(j, msg, own)
            self.speed[(j.model, j.label)] = wu.window_medians_ms[-1] if wu.window_medians_ms else own.first_inference_ms
        self.tell_estimate()
        if job.partner is not None:
            design = {"design": "in-process ABBA", "block": self.p.pair_block,
                      "note": "base and head artifacts loaded in one worker process per round group, timed in "
                              "alternating blocks; per-block ratios are what compare pairs"}
            job.entry.pairing_mode = job.partner.entry.pairing_mode = design
        self.log(f"  ready: warm-up {wu.runs + 1} runs in {wu.seconds:.1f} s"
                 f" ({'settled' if wu.settled else 'NOT settled'})")

    def tell_estimate(self) -> None:
        """The whole run's duration from the speeds warm-up measured (:mod:`.estimate`), said after the first
        warm-up and again whenever it moves by more than a quarter."""
        from .estimate import estimate_message, estimate_run

        est = estimate_run(self.speed, self.planned, self.p.iterations)
        if est is None:
            return
        if self._told_s is None or abs(est.seconds - self._told_s) > 0.25 * self._told_s:
            self._told_s = est.seconds
            self.log(estimate_message(est, min_iters=self.p.rounds))

    def _describe(self, job: Job, msg: m.Ready, own: m.Ready | m.PartnerLoad) -> None:
        """What an entry just set up records: how it runs, its artifact, rewrites and notes (``own``: its part
        of the ready message)."""
        e, wu, art = job.entry, msg.warmup, job.art
        e.device, e.input_shape, e.timing = msg.device, own.input_shape, msg.timing
        e.threads_readback, e.load_ms, e.first_inference_ms = own.readback, own.load_ms, own.first_inference_ms
        e.warmup, e.warmup_settled, e.warmup_detail = wu.runs + 1, wu.settled, wu.to_wire()
        e.processes = self.p.processes
        if own.compute_precision is not None:
            e.compute_precision = own.compute_precision  # what the session reports (OpenVINO: the hint in force)
        if (art is not None and art.get("quantization")) or job.form in COMPUTE_FORMS:
            e.fp32_form = artifacts.fp32_form(job.model)  # what speedup_vs_fp32 compares it with
        if art is not None:
            e.artifact = artifacts.entry_artifact(art)
            e.rewrites = art.get("rewrites", [])
        else:
            e.rewrites = msg.rewrites or []
        notes = list(own.notes)
        notes += thread_checks(job.backend, self.p.threads, own.readback)
        if not wu.settled:
            notes.append(f"warm-up did not settle: {wu.not_settled_because or ''}")
        for n in notes:
            e.note(n)
            self.log(f"  note: {n}")

    def pair_jobs(self, group: list[Job]) -> None:
        """With --against and ``pair_block``, pair each head entry of a runtime that runs an artifact with the
        base entry of the same model, form and runtime: one worker times both (:meth:`run_pair_round`).
        Torch entries (whose code is the checkout itself) and runtimes whose code differs between the two
        checkouts keep one process per side."""
        if len(self.sides) < 2 or not self.p.pair_block:
            return
        by: dict[tuple, dict[str, Job]] = {}
        for j in group:
            by.setdefault((j.model, j.form, j.backend, j.batch), {})[j.side.name] = j
        for (model, form, backend, _), d in by.items():
            head, base = d.get("head"), d.get("base")
            if head is None or base is None or artifacts.runtime_format(backend) is None:
                continue
            if head.art is None or base.art is None:
                continue
            same, why = same_runtime_code(backend, self.sides[0].root, self.sides[1].root)
            if not same:
                for j in (head, base):
                    j.entry.note(f"timed in separate processes: {why}")
                continue
            head.partner, base.paired_into = base, head

    def run_pair_round(self, job: Job, n: int, warm: int, rnd: int, rounds: int) -> None:
        """``n`` runs of each side in blocks of ``pair_block``, ABBA, in the head job's worker."""
        import math

        k = self.p.pair_block
        blocks = max(1, math.ceil(n / k))
        if self.bar is not None:
            self.bar.set_description_str(f"{job.label} (paired) r{rnd + 1}/{rounds}")
        msg = job.worker.request(m.RunPairCmd(blocks=blocks, block=k, warm=warm, start_with_b=rnd % 2 == 1),
                                 self.p.timeout_s)
        if not isinstance(msg, m.SamplesPair):
            raise WorkerError(m.describe(msg))
        if self.bar is not None:
            self.bar.update(2 * n)
        for j, ns in ((job, msg.a), (job.partner, msg.b)):
            j.ns.extend(ns)
            for i in range(blocks):
                j.round_medians.append(round(statistics.median(ns[i * k:(i + 1) * k]) / 1e6, 6))
                j.round_process.append(job.proc_idx)

    def run_round(self, job: Job, n: int, warm: int, rnd: int, rounds: int) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"{job.label} r{rnd + 1}/{rounds}")
        base = self.bar.n if self.bar is not None else 0

        def on_event(msg):
            if self.bar is not None and isinstance(msg, m.Progress):
                self.bar.update(base + msg.done - self.bar.n)

        msg = job.worker.request(m.RunCmd(n=n, warm=warm), self.p.timeout_s, on_event=on_event)
        if not isinstance(msg, m.Samples):
            raise WorkerError(m.describe(msg))
        ns = msg.ns
        if self.bar is not None:
            self.bar.update(base + n - self.bar.n)
        job.ns.extend(ns)
        job.round_medians.append(round(statistics.median(ns) / 1e6, 6))

    # -- main ----------------------------------------------------------------------------------------------
    def run(self) -> ResultsFile:
        prev = {}
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError, AttributeError):
                prev[sig] = signal.signal(sig, _raise_interrupt)
        try:
            self._run()
        except KeyboardInterrupt:
            self.interrupted = True
            self.log("interrupted: stopping workers and keeping the completed measurements")
        finally:
            for w in list(self.active):
                self._release(w, kill=True)
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            for sig, h in prev.items():
                with contextlib.suppress(ValueError, OSError):
                    signal.signal(sig, h)
            for side in self.sides:
                side.results.finish(interrupted=self.interrupted)
            self._tidy_logs()
        return self.results

    def _tidy_logs(self) -> None:
        """Worker logs are kept only when an entry failed (its error names the log)."""
        import shutil

        if any(e.status == "error" for side in self.sides for e in side.results.entries):
            self.log(f"worker logs: {self.log_dir}")
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def _run(self) -> None:
        p = self.p
        cores = available_cores()
        if p.threads > cores:
            msg = f"--threads {p.threads} exceeds the {cores} cores available to this process; runs will oversubscribe"
            for side in self.sides:
                side.results.warnings.append(msg)
            self.log(f"warning: {msg}")
        for side in self.sides:
            side.results.write()
        available = self.probe()
        for side in self.sides[1:]:
            self.check_side(side)
        jobs_by_model = self._jobs(available)
        self.planned = [(j.model, j.label) for jobs in jobs_by_model.values() for j in jobs]
        total = sum(p.iterations for jobs in jobs_by_model.values() for _ in jobs)
        if self.show_progress and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", dynamic_ncols=True, leave=False, file=sys.stderr,
                            mininterval=0.5, disable=None)
            if self.bar.disable:
                self.bar = None
        art_cache: dict = {}
        for model, jobs in jobs_by_model.items():
            for side in self.sides:
                self.prepare_artifacts(model, [j for j in jobs if j.side is side], art_cache, side)
            for group in [jobs] if p.rounds > 1 else [[j] for j in jobs]:
                self._run_group(group, art_cache)

    def _jobs(self, available: dict[str, str | None]) -> dict[str, list[Job]]:
        """The request's jobs (:meth:`.request.BenchRequest.jobs`), one per side, by model; entries of runtimes
        that cannot run here are recorded as skipped."""
        jobs_by_model: dict[str, list[Job]] = {}
        for spec in self.plan.jobs():
            for side in self.sides:
                e = side.results.new_entry(spec.model, spec.backend, spec.form, spec.batch)
                job = Job(spec.model, spec.form, spec.backend, e, side=side, batch=spec.batch)
                reason = available.get(spec.backend) or precision_unavailable(spec.backend, spec.form)
                if reason:
                    side.results.skip(e, reason)
                    self.log(f"{job.label}: skipped — {reason}")
                    continue
                jobs_by_model.setdefault(spec.model, []).append(job)
        return jobs_by_model

    def _run_group(self, group: list[Job], art_cache: dict) -> None:
        p = self.p
        live: list[Job] = []
        for job in group:
            try:
                job.art = self.artifact(job, art_cache)
            except (WorkerError, HvitError, _Skip) as err:  # raised again below, where each is handled
                job.art = err
        self.pair_jobs([j for j in group if not isinstance(j.art, Exception)])
        for job in group:
            try:
                if isinstance(job.art, Exception):
                    raise job.art
                if job.form in COMPUTE_FORMS:
                    self.precision_gate(job)  # before anything is timed; a failed gate fails the entry
                if job.paired_into is None:  # a paired base entry is set up by its head's worker
                    self.setup_job(job, job.art)
                live.append(job)
            except _Skip as s:
                self._release(job.worker)
                job.side.results.skip(job.entry, str(s))
                self.log(f"  skipped — {s}")
            except (WorkerError, HvitError) as err:
                self._fail(job, err)
        rounds = p.rounds
        sizes = round_sizes(p.iterations, rounds)
        for rnd, n in enumerate(sizes):
            order = live if rnd % 2 == 0 else list(reversed(live))
            for job in order:
                if job.worker is None:
                    continue
                # taking turns: a few untimed runs re-warm caches and clocks after the other entries ran
                warm = p.warmup.round_runs if len(live) > 1 else 0
                try:
                    want = rnd * p.processes // rounds
                    if want != job.proc_idx:  # a fresh process: its layout, placement and state are drawn anew
                        self._release(job.worker)
                        job.worker, job.proc_idx, warm = None, want, 0
                        self.setup_job(job, job.art, first=False)
                    if job.partner is not None:
                        self.run_pair_round(job, n, warm, rnd, rounds)
                    else:
                        self.run_round(job, n, warm, rnd, rounds)
                        job.round_process.append(job.proc_idx)
                except (WorkerError, _Skip) as err:
                    self._fail(job, err)
                    if job.partner is not None:
                        self._fail(job.partner, err)
                    continue
                if rounds > 1:
                    for j in (job, job.partner) if job.partner is not None else (job,):
                        j.side.results.update_samples(j.entry, j.ns, j.round_medians, complete=False,
                                                      round_process=j.round_process)
            if rounds > 1:
                for side in self.sides:
                    side.results.write()
        for job in live:
            self._finish_job(job)

    def _finish_job(self, job: Job) -> None:
        """A job whose rounds are done: complete samples, the drift note, the op profile, its worker released."""
        paired_base = job.paired_into is not None and job.entry.status != "error"
        if job.worker is None and not paired_base:
            return
        job.side.results.update_samples(job.entry, job.ns, job.round_medians, complete=True,
                                        round_process=job.round_process)
        rm = job.round_medians
        if len(rm) > 1 and min(rm) > 0 and max(rm) / min(rm) > 1.25:
            job.entry.note(
                f"round medians range {min(rm):.3f}–{max(rm):.3f} ms: the machine was busier during part of "
                "the run (the lowest round is the least disturbed); compare entries by their ratios")
        if self.p.op_profile.enabled and job.worker is not None:
            self._op_profile(job)
        self._release(job.worker)
        job.worker = None
        job.side.results.write()
        lo, hi = job.entry.median_ci_ms
        self.log(f"{job.label}: median {job.entry.median_ms:.3f} ms [{lo:.3f}, {hi:.3f}]")

    def _op_profile(self, job: Job) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"{job.label} op profile")
        try:
            msg = job.worker.request(m.OpProfileCmd(runs=self.p.op_profile.runs, top=self.p.op_profile.top),
                                     self.p.timeout_s)
        except WorkerError as err:
            job.entry.note(f"op profile failed: {err}")
            return
        if isinstance(msg, m.OpProfiled):
            job.entry.op_profile = msg.ops
        else:
            job.entry.note(f"op profile: {m.describe(msg)}")

    def _fail(self, job: Job, err: Exception) -> None:
        text = " ".join(str(err).split())
        if job.worker is not None:
            job.entry.worker_log = str(job.worker.log_path)
            self._release(job.worker, kill=True)
            job.worker = None
        job.side.results.fail(job.entry, text, job.ns, job.round_medians)
        job.side.results.write()
        self.log(f"{job.label}: FAILED — {text}")


class _Skip(Exception):
    pass


def _raise_interrupt(signum, frame):  # SIGTERM (e.g. a cancelled CI job) behaves like Ctrl-C
    raise KeyboardInterrupt


def same_runtime_code(backend: str, root_a: Path, root_b: Path) -> tuple[bool, str]:
    """Whether two checkouts run ``backend`` with the same code (its module and the modules it builds on in
    ``hvit_deploy/runtimes``): only then may one worker time both checkouts' artifacts."""
    import hashlib
    import inspect

    from ..runtimes import get_runtime

    mods = {c.__module__ for c in inspect.getmro(get_runtime(backend)) if c.__module__.startswith("hvit_deploy.runtimes")}
    for mod in sorted(mods):
        rel = Path(*mod.split(".")).with_suffix(".py")
        try:
            a, b = ((r / rel).read_bytes() for r in (root_a, root_b))
        except OSError:
            return False, f"{rel} is not in both checkouts"
        if hashlib.sha256(a).digest() != hashlib.sha256(b).digest():
            return False, f"{rel} differs between the checkouts (the runtime's own code changed)"
    return True, ""


def precision_unavailable(backend: str, form: str) -> str | None:
    """Why an entry of a compute-precision form (bf16) cannot run on ``backend`` here (the runtime says:
    no such compute path, or a CPU without BF16 arithmetic), else None."""
    if form not in COMPUTE_FORMS:
        return None
    from ..runtimes import get_runtime

    return get_runtime(backend).precision_unavailable(form)


def thread_checks(backend: str, threads: int, readback: dict) -> list[str]:
    """Notes when a runtime reports another thread count than the one asked for (each runtime says what)."""
    from ..runtimes import get_runtime

    return get_runtime(backend).thread_notes(threads, readback)


def run(plan: BenchRequest, **kw) -> ResultsFile:
    return Runner(plan, **kw).run()


__all__ = ["BenchRequest", "Job", "Plan", "Runner", "Side", "run", "worker_env"]
