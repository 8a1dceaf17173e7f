"""``hvit-export --cluster``: every job of the export plan (model x format x form) is one Ray task.

The caller hands over the checked :class:`~hvit_deploy.export.request.ExportRequest` and its plan (the same
jobs a local run executes); a task builds its session and runs its job with the functions a local run uses
(:func:`hvit_deploy.export.run.build_session`, :func:`~hvit_deploy.export.run.run_job`).

A task builds the model (from the caller's code, shipped with the task), exports and validates one artifact into
a temporary folder on its node and returns the entry and the artifact's bytes; the caller writes the files into
``--out`` under the names a local run gives them and merges the entry into ``manifest.json`` (atomically) as each
task finishes, so an interrupted run keeps what finished. Entries are what a local run writes, plus ``cluster``
(the node that made the artifact); ``seconds``/``export_s`` and ``tools`` are that node's.

Failures: a task whose worker or node dies, or that raises an error of the machinery (a lost object, an I/O
error), is retried once by Ray (``max_retries=1``, ``retry_exceptions``); after that it is recorded in the
manifest's ``failures`` with the reason. An export that fails validation fails as it does locally (no retry:
it would fail again). Input errors (:class:`~hvit_deploy.errors.HvitError`) stop the run with exit 2, as locally.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..errors import HvitError
from ..export.request import ExportRequest, ExportTask, ModelPlan, failed_entry
from . import _ray

PROG = "hvit-export"
CPUS_ENV = "HVIT_CLUSTER_EXPORT_CPUS"  # CPUs each export task asks for (default 1: one export per core)


def _export_task(payload: dict) -> dict:
    """Runs on a worker: one job into a temporary folder; returns the entry and the files' bytes."""
    from ..export.run import build_session, run_job

    work = Path(tempfile.mkdtemp(prefix="hvit-cluster-export-"))
    try:
        shipped = {k: str(_ray.materialize(v, work / "in")) for k, v in payload["shipped"].items()}
        _ray.load_plugins(payload["plugins"], work / "plugins")
        job: ExportTask = payload["job"]
        checkpoint = shipped.get("checkpoint")
        # the worker's copies of the files the request names
        request: ExportRequest = payload["request"].model_copy(
            update={k: v for k, v in shipped.items() if k != "checkpoint"})
        node = _ray.node_info()
        try:
            session, notes = build_session(request, job.model, checkpoint)
        except HvitError as e:
            return {"build_error": str(e), "exit_code": e.exit_code, "node": node}
        out = work / "out"
        out.mkdir()
        try:
            entry = run_job(session, request, job, out)
        except HvitError as e:
            return {"export_error": str(e), "exit_code": e.exit_code, "notes": notes, "node": node}
        entry = _restore_paths(entry, {shipped[k]: payload["sources"][k] for k in shipped})
        entry["cluster"] = node
        files = {f.relative_to(out).as_posix(): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()}
        return {"entry": entry, "files": files, "notes": notes, "node": node}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _restore_paths(obj, mapping: dict[str, str]):
    """The caller's paths where the worker's copies of shipped files appear (``checkpoint``, calibration
    ``folder``), so entries read as a local run's."""
    if isinstance(obj, str):
        for tmp, src in mapping.items():
            if obj == tmp or obj.startswith(tmp + os.sep):
                return src + obj[len(tmp):]
        return obj
    if isinstance(obj, dict):
        return {k: _restore_paths(v, mapping) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore_paths(v, mapping) for v in obj]
    return obj


def write_files(out: Path, files: dict[str, bytes]) -> None:
    """Put a task's files into ``out``: each top-level file atomically, each folder (``.mlpackage``) built
    beside its place and swapped in, so a reader never sees half an artifact."""
    from ..utils.io import atomic_write_bytes

    tops: dict[str, dict[str, bytes]] = {}
    for rel, data in files.items():
        top, _, rest = rel.partition("/")
        tops.setdefault(top, {})[rest] = data
    for top, members in tops.items():
        if list(members) == [""]:
            atomic_write_bytes(out / top, members[""])
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{top}.", dir=out))
        for rest, data in members.items():
            f = tmp / rest
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        target, old = out / top, None
        if target.exists():
            old = out / f".{top}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def run(request: ExportRequest, plans: list[ModelPlan], out: Path, record: Callable[[dict], None], *,
        address: str = "auto") -> list[dict]:
    """Execute ``plans`` on the Ray cluster at ``address``; ``record(entry)`` as each entry is decided (the
    caller prints a failure and updates the manifest). Returns the entries in the order a local run records
    them."""
    from ..export import update_manifest

    fixed: dict[str, dict] = {}  # per model: no checkpoint found, or it did not build
    for mp in plans:
        if mp.error is not None:
            fixed[mp.model] = failed_entry(mp.model, request.formats, mp.error)
            record(fixed[mp.model])
    jobs = [job for mp in plans if mp.error is None for job in mp.jobs]
    got: dict[int, dict] = {}
    if jobs:
        with _ray.connected(address) as ray:
            _Run(ray, request, jobs, out, record, fixed, single=len(plans) == 1).collect(got)
    entries = []
    for mp in plans:
        if mp.model in fixed:
            entries.append(fixed[mp.model])
            continue
        entries += [got[i] for i, job in enumerate(jobs) if job.model == mp.model and i in got]
    if entries and jobs:
        update_manifest(out, entries)  # the order a local run leaves (entries were merged as they came)
    return entries


class _Run:
    """One cluster run: the tasks in flight and what came back."""

    def __init__(self, ray, request: ExportRequest, jobs: list[ExportTask], out: Path, record, fixed: dict,
                 *, single: bool):
        self.ray, self.request, self.jobs, self.out, self.record = ray, request, jobs, out, record
        self.fixed, self.single = fixed, single
        self.noted: set[str] = set()
        self.finished = 0
        self.bar = _bar(len(jobs))

    def payloads(self) -> list[dict]:
        """Each job with the request, every file it names sent by value (the task swaps in its own copies)."""
        cache: dict[str, dict] = {}

        def shipped(path: str) -> dict:
            if path not in cache:
                cache[path] = _ray.ship(self.ray, path)
            return cache[path]

        plugins = _ray.ship_plugins(self.ray, self.request.plugins)
        payloads = []
        for job in self.jobs:
            named = self.request.files(job.checkpoint)
            payloads.append({"job": job, "request": self.request, "plugins": plugins, "sources": named,
                             "shipped": {k: shipped(v) for k, v in named.items()}})
        return payloads

    def say(self, msg: str) -> None:
        (self.bar.write if self.bar is not None else print)(msg, file=sys.stderr)

    def collect(self, got: dict[int, dict]) -> None:
        task = self.ray.remote(_export_task).options(
            num_cpus=float(os.environ.get(CPUS_ENV, "1")), max_retries=1,
            retry_exceptions=_ray.retry_exceptions(self.ray))
        pending = {task.remote(p): i for i, p in enumerate(self.payloads())}
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    entry = self.take(self.jobs[i], self.result(ref, self.jobs[i]))
                    if entry is not None:
                        got[i] = entry
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
            if self.bar is not None:
                self.bar.close()
        for i in list(got):  # a model that did not build keeps its one entry
            if self.jobs[i].model in self.fixed:
                del got[i]

    def result(self, ref, job: ExportTask) -> dict:
        try:
            res = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            res = {"entry": failed_entry(job.model, job.format, _ray.describe_failure(e), rewritten=job.rewritten)}
        self.finished += 1
        if self.bar is not None:
            self.bar.update(1)
        else:  # no terminal: one line per finished task instead of a bar
            status = (res.get("entry") or {}).get("status") or "not built"
            where = (res.get("node") or {}).get("node_ip", "?")
            self.say(f"{PROG}: [{self.finished}/{len(self.jobs)}] {job.label}: {status} (node {where})")
        for n in res.get("notes", []):
            if n not in self.noted:
                self.noted.add(n)
                self.say(f"{PROG}: note: {n}")
        return res

    def take(self, job: ExportTask, res: dict) -> dict | None:
        """The entry of a finished task (None: its model did not build); input errors stop the run."""
        if "export_error" in res:
            raise HvitError(res["export_error"])
        if "build_error" in res:
            if self.single:
                raise HvitError(res["build_error"])
            if job.model not in self.fixed:  # one entry per model, as locally
                self.fixed[job.model] = failed_entry(job.model, self.request.formats, res["build_error"])
                _record(self.record, self.bar, self.fixed[job.model])
            return None
        if res.get("files"):
            write_files(self.out, res["files"])
        _record(self.record, self.bar, res["entry"])
        return res["entry"]


def _record(record, bar, entry: dict) -> None:
    if bar is None:
        record(entry)
        return
    with _redirect_to(bar):
        record(entry)


@contextlib.contextmanager
def _redirect_to(bar):
    """The CLI's failure lines go through the bar so it is not torn."""
    old = sys.stderr

    class _W:
        def write(self, s):
            if s.strip():
                bar.write(s.rstrip("\n"), file=old)

        def flush(self):
            pass

    sys.stderr = _W()
    try:
        yield
    finally:
        sys.stderr = old


def _bar(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, unit="export", desc=f"{PROG}: cluster", dynamic_ncols=True, file=sys.stderr,
               disable=None, leave=False)
    return None if bar.disable else bar
