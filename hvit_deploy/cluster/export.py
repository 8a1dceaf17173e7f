"""``hvit-export --cluster``: every (model, format, variant) export is one Ray task.

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
import warnings
from pathlib import Path
from typing import Callable

from ..errors import HvitError, HvitNotice
from . import _ray

PROG = "hvit-export"
CPUS_ENV = "HVIT_CLUSTER_EXPORT_CPUS"  # CPUs each export task asks for (default 1: one export per core)


def _export_task(job: dict) -> dict:
    """Runs on a worker: one export into a temporary folder; returns the entry and the files' bytes."""
    from ..cli.common import debug_enabled
    from ..export import ExportSession

    work = Path(tempfile.mkdtemp(prefix="hvit-cluster-export-"))
    try:
        shipped = {k: _ray.materialize(v, work / "in") for k, v in job["shipped"].items()}
        _ray.load_plugins(job["plugins"], work / "plugins")
        session_kw = dict(job["session"])
        for key in ("checkpoint", "labels", "recipe"):
            if key in shipped:
                session_kw[key] = str(shipped[key])
        quant = dict(job["quant"])
        for key in ("calibration", "eval_data"):
            if key in shipped:
                quant[key] = str(shipped[key])
        node = _ray.node_info()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", HvitNotice)
                session = ExportSession(job["model"], **session_kw)
        except HvitError as e:
            return {"build_error": str(e), "exit_code": e.exit_code, "node": node}
        notes = [" ".join(str(n.message).split()) for n in caught if issubclass(n.category, HvitNotice)]
        out = work / "out"
        out.mkdir()
        try:
            result = session.export(job["format"], out, rewrite=job["rewritten"], opset=job["opset"],
                                    precision=job["precision"], **quant)
            entry = result.entry
        except HvitError as e:
            return {"export_error": str(e), "exit_code": e.exit_code, "notes": notes, "node": node}
        except Exception as e:  # noqa: BLE001 - as locally: one model's bug must not sink the others
            if debug_enabled():
                raise
            entry = {"model": job["model"], "format": job["format"], "status": "failed",
                     "rewritten": job["rewritten"],
                     "error": f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"}
        entry = _restore_paths(entry, {str(shipped[k]): job["sources"][k] for k in shipped})
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


def run(args, names: list[str], formats: list[str], variants: list[bool], quant: dict, out: Path,
        find_checkpoint: Callable[[Path, str], Path | None], record: Callable[[dict], None]) -> list[dict]:
    """The cluster run of ``hvit-export``; ``record(entry)`` is the CLI's own (prints a failure, updates the
    manifest). Returns the entries in the order a local run records them."""
    from ..export import update_manifest

    order: list[tuple] = []           # slots in local order: ("model", name) then ("job", i) for its exports
    fixed: dict[tuple, dict] = {}     # entries decided here (no checkpoint found, a model that did not build)
    jobs: list[dict] = []
    for name in names:
        checkpoint = args.checkpoint
        if args.checkpoint_dir:
            checkpoint = find_checkpoint(Path(args.checkpoint_dir), name)
            if checkpoint is None:
                entry = {"model": name, "format": ",".join(formats), "status": "failed",
                         "error": f"no checkpoint for {name} in {args.checkpoint_dir}"}
                fixed[("model", name)] = entry
                record(entry)
                order.append(("model", name))
                continue
        order.append(("model", name))
        for fmt in formats:
            for rewritten in variants:
                order.append(("job", len(jobs)))
                jobs.append({"model": name, "format": fmt, "rewritten": rewritten,
                             "checkpoint": str(checkpoint) if checkpoint else None})
    if not jobs:
        return [fixed[s] for s in order if s in fixed]

    with _ray.connected(args.cluster) as ray:
        cache: dict[str, dict] = {}

        def shipped(path) -> dict:
            key = str(path)
            if key not in cache:
                cache[key] = _ray.ship(ray, path)
            return cache[key]

        from ..bench import plugins as plugin_mod

        plugin_items = _ray.ship_plugins(ray, plugin_mod.normalise(getattr(args, "plugin", None) or []))
        session = dict(input_size=args.input_size, batch_size=args.batch, trust_checkpoint=args.trust_checkpoint,
                       use_ema=args.use_ema, validate=not args.no_validate, num_classes=args.num_classes,
                       labels=args.labels, recipe=args.recipe, dynamic_batch=args.dynamic_batch,
                       fold_normalize=args.fold_normalize, image_input=args.image_input, features=args.features)
        int8 = args.precision in ("int8", "w4")
        payloads = []
        for j in jobs:
            # every file the command names goes by value (the task swaps in its own copy's path)
            named = {"labels": args.labels, "recipe": args.recipe, "checkpoint": j["checkpoint"],
                     **({k: quant.get(k) for k in ("calibration", "eval_data")} if int8 else {})}
            named = {k: v for k, v in named.items() if v}
            payloads.append({**j, "session": {**session, "checkpoint": j["checkpoint"]},
                             "quant": quant if int8 else {}, "opset": args.opset, "precision": args.precision,
                             "plugins": plugin_items, "shipped": {k: shipped(v) for k, v in named.items()},
                             "sources": {k: str(v) for k, v in named.items()}})
        task = ray.remote(_export_task).options(
            num_cpus=float(os.environ.get(CPUS_ENV, "1")), max_retries=1,
            retry_exceptions=_ray.retry_exceptions(ray))
        pending = {task.remote(p): i for i, p in enumerate(payloads)}
        got: dict[int, dict] = {}
        noted: set[str] = set()
        build_failed: set[str] = set()
        bar = _bar(len(pending))
        finished = 0

        def say(msg: str) -> None:
            (bar.write if bar is not None else print)(msg, file=sys.stderr)

        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    job = jobs[i]
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        res = {"entry": {"model": job["model"], "format": job["format"], "status": "failed",
                                         "rewritten": job["rewritten"], "error": _ray.describe_failure(e)}}
                    finished += 1
                    if bar is not None:
                        bar.update(1)
                    else:  # no terminal: one line per finished task instead of a bar
                        status = (res.get("entry") or {}).get("status") or "not built"
                        where = (res.get("node") or {}).get("node_ip", "?")
                        say(f"{PROG}: [{finished}/{len(payloads)}] {job['model']} -> {job['format']}"
                            f"{'' if job['rewritten'] else ' (as written)'}: {status} (node {where})")
                    for n in res.get("notes", []):
                        if n not in noted:
                            noted.add(n)
                            say(f"{PROG}: note: {n}")
                    if "export_error" in res:
                        raise HvitError(res["export_error"])
                    if "build_error" in res:
                        if len(names) == 1:
                            raise HvitError(res["build_error"])
                        if job["model"] not in build_failed:  # one entry per model, as locally
                            build_failed.add(job["model"])
                            entry = {"model": job["model"], "format": ",".join(formats), "status": "failed",
                                     "error": res["build_error"]}
                            fixed[("model", job["model"])] = entry
                            _record(record, bar, entry)
                        continue
                    if res.get("files"):
                        write_files(out, res["files"])
                    got[i] = res["entry"]
                    _record(record, bar, res["entry"])
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if bar is not None:
                bar.close()
    entries = []
    for slot in order:
        if slot in fixed:
            entries.append(fixed[slot])
        elif slot[0] == "job" and slot[1] in got and jobs[slot[1]]["model"] not in build_failed:
            entries.append(got[slot[1]])
    if entries:
        update_manifest(out, entries)  # the order a local run leaves (entries were merged as they came)
    return entries


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
