"""The coordinator of ``hvit-bench``: plans the entries, runs each in its own worker process, writes results.

Every (model, variant, backend) entry runs in a fresh worker process (:mod:`.worker`) whose environment carries
the thread settings before any runtime is imported, so a crash, a leaked thread pool or a runtime's global state
cannot reach another entry. With ``rounds > 1`` the workers of one model stay alive together and take turns,
``iterations / rounds`` timed runs each per round, the order reversed every other round, so slow drift of a
shared machine lands on every entry of that model alike (their ratios are what the project reports).

The results file is rewritten atomically after every finished entry or round: Ctrl-C, SIGTERM or a crashing
worker leave every completed measurement on disk.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import HvitError
from . import artifacts
from .environment import available_cores
from .profiles import Profile
from .results import ResultsFile

WORKER_MODULE = "hvit_deploy.bench.worker"
PKG_ROOT = Path(__file__).resolve().parents[2]  # the directory holding this hvit_deploy package
QUIT_GRACE_S = 5.0


class WorkerError(Exception):
    """A worker that crashed, stalled or answered with an error."""


# ------------------------------------------------------------------------------------------------- processes


def worker_env(threads: int, plugins: list[str] | None = None, root: str | Path | None = None) -> dict:
    """The environment of a worker: thread variables, the plugin list, and ``root`` (the checkout whose
    hvit_deploy it imports; default this one) first on PYTHONPATH."""
    env = dict(os.environ)
    if env.get("HVIT_CACHE_DIR"):
        env["HVIT_CACHE_DIR"] = str(Path(env["HVIT_CACHE_DIR"]).expanduser().resolve())
    if plugins:
        from .plugins import ENV_VAR

        env[ENV_VAR] = os.pathsep.join(plugins)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # the worker must import the same hvit_deploy as this process, wherever it was started from
    pkg_root = str(Path(root).resolve() if root else PKG_ROOT)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if pkg_root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([pkg_root] + paths)
    return env


class Worker:
    """A worker process with a JSON-lines channel; every wait has a timeout and notices a dead child."""

    def __init__(self, env: dict, label: str, log_dir: Path, cwd: str | Path | None = None):
        self.label = label
        self.log_path = log_dir / f"{label.replace('/', '_')}.{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, "--fd", str(w)],
                stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, pass_fds=(w,), env=env,
                cwd=cwd, start_new_session=True,  # Ctrl-C reaches the coordinator only; it stops workers itself
            )
        finally:
            os.close(w)
        self._r = r
        self._buf = b""

    def send(self, cmd: dict) -> None:
        import json

        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._death_message()) from None

    def _readline(self, timeout: float) -> dict:
        import json

        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"no answer for {timeout:.0f} s (stalled); stopped it")
            ready, _, _ = select.select([self._r], [], [], min(left, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    raise WorkerError(self._death_message())
                continue
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                self.proc.wait(timeout=10)
                raise WorkerError(self._death_message())
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def request(self, cmd: dict, timeout: float, on_event: Callable[[dict], None] | None = None,
                final: tuple[str, ...] = ()) -> dict:
        """Send ``cmd`` and return the first reply whose event is in ``final`` (or any non-progress event);
        ``timeout`` is the longest silence allowed between two messages."""
        self.send(cmd)
        while True:
            msg = self._readline(timeout)
            ev = msg.get("event")
            if ev in ("progress", "warming", "loaded"):
                if on_event:
                    on_event(msg)
                continue
            if final and ev not in final and ev not in ("error", "skipped"):
                if on_event:
                    on_event(msg)
                continue
            return msg

    def _death_message(self) -> str:
        rc = self.proc.poll()
        if rc is None:
            return "worker stopped answering"
        if rc < 0:
            try:
                why = signal.Signals(-rc).name
            except ValueError:
                why = f"signal {-rc}"
            head = f"worker crashed ({why})"
        else:
            head = f"worker exited with code {rc}"
        tail = self.log_tail()
        return f"{head}; last output: {tail}" if tail else head

    def log_tail(self, lines: int = 3) -> str:
        try:
            self._log.flush()
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        text = [t.strip() for t in text if t.strip()]
        # runtimes print deprecation warnings by the screenful; quote what is not one of them
        useful = [t for t in text if "warn" not in t.lower() and not t.startswith(("warnings.", "File \"", "^"))]
        keep = (useful or text)[-lines:]
        return " | ".join(keep)[-500:]

    def close(self, grace: float = QUIT_GRACE_S) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(WorkerError, OSError, ValueError):
                self.send({"cmd": "quit"})
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._cleanup()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the worker and anything it started
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._cleanup()

    def _cleanup(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._r)
        self._r = -1
        with contextlib.suppress(OSError):
            self._log.close()


# ----------------------------------------------------------------------------------------------------- plan


@dataclass
class Plan:
    models: list[str]
    backends: list[str]
    variants: list[str]
    profile: Profile
    checkpoints: dict[str, str] = field(default_factory=dict)
    out: Path | None = None
    command: str = ""
    plugins: list[str] = field(default_factory=list)
    against: Path | None = None        # another checkout timed side by side (interleaved) with this one
    against_out: Path | None = None


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
    variant: str
    backend: str
    entry: dict
    side: Side | None = None
    worker: Worker | None = None
    ns: list[int] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    round_process: list[int] = field(default_factory=list)
    art: dict | None = None
    proc_idx: int = 0
    done: bool = False

    @property
    def label(self) -> str:
        tag = f" [{self.side.name}]" if self.side is not None and not (self.side.own and self.side.name == "this") else ""
        return f"{self.model}/{self.backend}/{self.variant}{tag}"


class Runner:
    def __init__(self, plan: Plan, *, progress: bool = True, log: Callable[[str], None] | None = None):
        self.plan = plan
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
                side.results.doc["pairing"] = {"run": run_id, "side": side.name, "root": str(side.root)}
        self.active: list[Worker] = []
        self.bar = None
        self.interrupted = False

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

    def _one_shot(self, label: str, cmd: dict, timeout: float, side: Side | None = None) -> dict:
        w = self._spawn(label, side)
        try:
            msg = w.request(cmd, timeout)
        finally:
            self._release(w)
        return msg

    # -- phases --------------------------------------------------------------------------------------------
    def probe(self) -> dict[str, str | None]:
        """None or the reason each backend cannot run here; GPU checks run in a probe process."""
        from .backends import quick_check

        out: dict[str, str | None] = {}
        undecided = []
        for b in self.plan.backends:
            decided, reason = quick_check(b)
            if decided:
                out[b] = reason
            else:
                undecided.append(b)
        if undecided:
            try:
                msg = self._one_shot("probe", {"cmd": "probe", "backends": undecided}, timeout=300)
            except WorkerError as e:
                msg = {"event": "error", "error": str(e)}
            if msg.get("event") == "probe":
                out.update(msg["available"])
            else:
                out.update({b: f"availability check failed: {msg.get('error')}" for b in undecided})
        return out

    def prepare_artifacts(self, model: str, jobs: list["Job"], cache: dict, side: Side) -> None:
        """Fill ``cache[(side, model, fmt, rewrite)]`` with the artifact manifest, or the error, for every job of
        ``model``; what the cache lacks is exported in one child process (the model is built once). Another
        checkout's artifacts are always asked of its own export process (its sources make its cache keys)."""
        missing: list[tuple[str, bool]] = []
        for job in jobs:
            fmt = artifacts.BACKEND_FORMAT[job.backend]
            rewrite = job.variant == "rewritten"
            k = (side.name, model, fmt, rewrite)
            if fmt is None or k in cache or (fmt, rewrite) in missing:
                continue
            if not side.own:
                missing.append((fmt, rewrite))
                continue
            try:
                names = artifacts.rewrite_names(model, fmt, rewrite)
                key, _ = artifacts.artifact_key(model, fmt, rewrite=rewrite, rewrites=names,
                                                input_size=self.p.input_size, batch_size=self.p.batch_size,
                                                precision=self.p.precision,
                                                checkpoint=self.plan.checkpoints.get(model))
            except HvitError as e:
                cache[k] = WorkerError(str(e))
                continue
            info = artifacts.lookup(model, fmt, rewrite, key)
            if info:
                info["cached"] = True
                cache[k] = info
            else:
                missing.append((fmt, rewrite))
        if not missing:
            return
        what = ", ".join(f"{fmt} ({'rewritten' if rw else 'original'})" for fmt, rw in missing)
        self.log(f"{model}: exporting {what}{'' if side.own else f' with {side.root}'} ...")
        try:
            msg = self._one_shot(f"export-{model}-{side.name}", {
                "cmd": "export", "model": model, "requests": missing, "input_size": self.p.input_size,
                "checkpoint": self.plan.checkpoints.get(model), "batch_size": self.p.batch_size,
                "precision": self.p.precision}, timeout=self.p.timeout_s, side=side)
        except WorkerError as e:
            msg = {"event": "error", "error": str(e)}
        for i, (fmt, rewrite) in enumerate(missing):
            k = (side.name, model, fmt, rewrite)
            if msg.get("event") != "exported":
                cache[k] = WorkerError(f"export to {fmt} failed: {msg.get('error') or msg.get('reason')}")
                continue
            r = msg["results"][i]
            if r["ok"]:
                cache[k] = r["info"]
                self.log(f"  {fmt}: exported and validated in {r['info'].get('export_s', 0):.1f} s → {r['info']['path']}")
            else:
                cache[k] = WorkerError(f"export to {fmt} failed: {r['error']}")

    def check_side(self, side: Side) -> None:
        """Another checkout must have a worker that speaks this protocol."""
        from ..errors import HvitError as _E
        from .worker import PROTOCOL

        try:
            msg = self._one_shot(f"hello-{side.name}", {"cmd": "hello"}, timeout=300, side=side)
        except WorkerError as e:
            raise _E(f"--against {side.root}: its hvit-bench worker does not start: {e}") from None
        if msg.get("event") != "hello" or msg.get("protocol") != PROTOCOL:
            raise _E(f"--against {side.root}: its hvit-bench worker speaks another protocol "
                     f"({msg.get('protocol', 'none')}, this one {PROTOCOL}); use a checkout with the same hvit-bench")
        pkg = Path(msg.get("package", "")).resolve()
        if side.root not in pkg.parents:
            raise _E(f"--against {side.root}: its worker imported hvit_deploy from {pkg.parent}, not from that checkout")
        side.results.doc["environment"]["versions"]["hvit-deploy"] = msg.get("version")

    def artifact(self, job: "Job", cache: dict) -> dict | None:
        fmt = artifacts.BACKEND_FORMAT[job.backend]
        if fmt is None:
            return None
        got = cache[(job.side.name, job.model, fmt, job.variant == "rewritten")]
        if isinstance(got, Exception):
            raise got
        return got

    def setup_job(self, job: Job, art: dict | None, first: bool = True) -> None:
        from ..factory import resolve_input_size
        from ..registry import get_spec

        spec_m = get_spec(job.model)
        size = resolve_input_size(spec_m, self.p.input_size)
        spec = {
            "model": job.model, "backend": job.backend, "variant": job.variant,
            "rewrite": job.variant == "rewritten", "threads": self.p.threads,
            "batch_size": self.p.batch_size, "input_size": self.p.input_size,
            "input_shape": [self.p.batch_size, *size],
            "checkpoint": self.plan.checkpoints.get(job.model),
            "artifact": art["path"] if art else None,
            "warmup": self.p.warmup.model_dump(),
        }
        job.worker = self._spawn(job.label, job.side)
        self.log(f"{job.label}: loading ..." if first else
                 f"{job.label}: process {job.proc_idx + 1}/{self.p.processes}: loading ...")

        def on_event(msg):
            if msg["event"] == "loaded":
                self.log(f"  loaded in {msg['load_ms'] / 1e3:.2f} s, first inference {msg['first_inference_ms']:.1f} ms; warming up ...")

        msg = job.worker.request({"cmd": "setup", "spec": spec}, self.p.timeout_s, on_event=on_event)
        ev = msg.get("event")
        if ev == "skipped":
            raise _Skip(msg["reason"])
        if ev != "ready":
            raise WorkerError(msg.get("error", f"unexpected answer {ev!r}"))
        e = job.entry
        wu = msg["warmup"]
        e.setdefault("process_runs", []).append({
            "pid": msg.get("pid"), "load_ms": msg["load_ms"], "first_inference_ms": msg["first_inference_ms"],
            "warmup": wu["runs"] + 1, "warmup_settled": wu["settled"]})
        if not first:
            if not wu["settled"]:
                e.setdefault("notes", []).append(
                    f"process {job.proc_idx + 1}: warm-up did not settle: {wu.get('not_settled_because', '')}")
            return
        e.update({
            "device": msg["device"], "input_shape": msg["input_shape"], "timing": msg["timing"],
            "threads_readback": msg["readback"], "load_ms": msg["load_ms"],
            "first_inference_ms": msg["first_inference_ms"], "warmup": wu["runs"] + 1,
            "warmup_settled": wu["settled"], "warmup_detail": wu, "processes": self.p.processes,
        })
        if art is not None:
            e["artifact"] = {"path": art["path"], "key": art.get("key"), "cached": art.get("cached"),
                             "export_s": art.get("export_s"), "exporter": art.get("exporter"),
                             "validation": art.get("validation")}
            e["rewrites"] = art.get("rewrites", [])
        else:
            e["rewrites"] = msg.get("rewrites") or []
        notes = list(msg.get("notes") or [])
        notes += thread_checks(job.backend, self.p.threads, msg["readback"])
        if not wu["settled"]:
            notes.append(f"warm-up did not settle: {wu.get('not_settled_because', '')}")
        if notes:
            e.setdefault("notes", []).extend(notes)
            for n in notes:
                self.log(f"  note: {n}")
        self.log(f"  ready: warm-up {wu['runs'] + 1} runs in {wu['seconds']:.1f} s"
                 f" ({'settled' if wu['settled'] else 'NOT settled'})")

    def run_round(self, job: Job, n: int, warm: int, rnd: int, rounds: int) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"{job.label} r{rnd + 1}/{rounds}")
        base = self.bar.n if self.bar is not None else 0

        def on_event(msg):
            if self.bar is not None and msg["event"] == "progress":
                self.bar.update(base + msg["done"] - self.bar.n)

        msg = job.worker.request({"cmd": "run", "n": n, "warm": warm}, self.p.timeout_s, on_event=on_event)
        if msg.get("event") != "samples":
            raise WorkerError(msg.get("error", f"unexpected answer {msg.get('event')!r}"))
        ns = msg["ns"]
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

        if any(e.get("status") == "error" for side in self.sides for e in side.results.entries):
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
        jobs_by_model: dict[str, list[Job]] = {}
        for model in self.plan.models:
            for variant in self.plan.variants:
                for backend in self.plan.backends:
                    for side in self.sides:
                        e = side.results.new_entry(model, backend, variant)
                        job = Job(model, variant, backend, e, side=side)
                        reason = available.get(backend)
                        if reason:
                            side.results.skip(e, reason)
                            self.log(f"{job.label}: skipped — {reason}")
                            continue
                        jobs_by_model.setdefault(model, []).append(job)
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

    def _run_group(self, group: list[Job], art_cache: dict) -> None:
        p = self.p
        live: list[Job] = []
        for job in group:
            try:
                art = self.artifact(job, art_cache)
                job.art = art
                self.setup_job(job, art)
                live.append(job)
            except _Skip as s:
                self._release(job.worker)
                job.side.results.skip(job.entry, str(s))
                self.log(f"  skipped — {s}")
            except (WorkerError, HvitError) as err:
                self._fail(job, err)
        rounds = p.rounds
        sizes = [p.iterations // rounds + (1 if r < p.iterations % rounds else 0) for r in range(rounds)]
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
                    self.run_round(job, n, warm, rnd, rounds)
                    job.round_process.append(job.proc_idx)
                except (WorkerError, _Skip) as err:
                    self._fail(job, err)
                    continue
                if rounds > 1:
                    job.side.results.update_samples(job.entry, job.ns, job.round_medians, complete=False,
                                                    round_process=job.round_process)
            if rounds > 1:
                for side in self.sides:
                    side.results.write()
        for job in live:
            if job.worker is None:
                continue
            job.side.results.update_samples(job.entry, job.ns, job.round_medians, complete=True,
                                            round_process=job.round_process)
            rm = job.round_medians
            if len(rm) > 1 and min(rm) > 0 and max(rm) / min(rm) > 1.25:
                job.entry.setdefault("notes", []).append(
                    f"round medians range {min(rm):.3f}–{max(rm):.3f} ms: the machine was busier during part of "
                    "the run (the lowest round is the least disturbed); compare entries by their ratios")
            if p.op_profile.enabled:
                self._op_profile(job)
            self._release(job.worker)
            job.worker = None
            job.side.results.write()
            self.log(f"{job.label}: median {job.entry['median_ms']:.3f} ms "
                     f"[{job.entry['median_ci_ms'][0]:.3f}, {job.entry['median_ci_ms'][1]:.3f}]")

    def _op_profile(self, job: Job) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"{job.label} op profile")
        try:
            msg = job.worker.request({"cmd": "op_profile", "runs": self.p.op_profile.runs,
                                      "top": self.p.op_profile.top}, self.p.timeout_s)
        except WorkerError as err:
            job.entry.setdefault("notes", []).append(f"op profile failed: {err}")
            return
        if msg.get("event") == "op_profile":
            job.entry["op_profile"] = msg["ops"]
        else:
            job.entry.setdefault("notes", []).append(
                f"op profile: {msg.get('reason') or msg.get('error', 'failed')}")

    def _fail(self, job: Job, err: Exception) -> None:
        text = " ".join(str(err).split())
        if job.worker is not None:
            job.entry["worker_log"] = str(job.worker.log_path)
            self._release(job.worker, kill=True)
            job.worker = None
        job.side.results.fail(job.entry, text, job.ns, job.round_medians)
        job.side.results.write()
        self.log(f"{job.label}: FAILED — {text}")


class _Skip(Exception):
    pass


def _raise_interrupt(signum, frame):  # SIGTERM (e.g. a cancelled CI job) behaves like Ctrl-C
    raise KeyboardInterrupt


def thread_checks(backend: str, threads: int, readback: dict) -> list[str]:
    """Notes when a runtime reports another thread count than the one asked for."""
    notes = []
    want = {"torch": ("intra_op_threads",), "torch-cuda": ("intra_op_threads",),
            "onnxruntime": ("intra_op_threads",), "onnxruntime-cuda": ("intra_op_threads",),
            "openvino": ("INFERENCE_NUM_THREADS",)}.get(backend, ())
    for key in want:
        got = readback.get(key)
        if got is not None and int(got) != threads:
            notes.append(f"{backend} reports {key}={got}, not the {threads} asked for")
    streams = readback.get("NUM_STREAMS")
    if backend == "openvino" and streams is not None and int(streams) != 1:
        notes.append(f"openvino runs {streams} streams, not 1")
    added = readback.get("os_threads_added_by_session")
    if backend == "onnxruntime" and added is not None and added > threads:
        notes.append(f"onnxruntime session added {added} OS threads for {threads} intra-op threads")
    return notes


def run(plan: Plan, **kw) -> ResultsFile:
    return Runner(plan, **kw).run()


__all__ = ["Plan", "Runner", "Side", "run", "worker_env"]
