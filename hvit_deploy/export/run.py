"""Executing a planned export request (see :mod:`.request`): the session of one model, one job, a local run.

``--cluster`` runs (:mod:`hvit_deploy.cluster.export`) call :func:`build_session` and :func:`run_job` on their
workers, so a job does the same thing wherever it runs.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

from ..errors import HvitError, HvitNotice
from ..utils.debug import debug_enabled
from .request import ExportRequest, ExportTask, ModelPlan, failed_entry, internal_error


def build_session(request: ExportRequest, model: str, checkpoint: str | None):
    """``(session, notes)``: the model's :class:`~.pipeline.ExportSession` as the request asks, and the notices
    (:class:`~hvit_deploy.errors.HvitNotice`) its building gave, one line each; other warnings pass on."""
    from .pipeline import ExportSession

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HvitNotice)
        session = ExportSession(model, checkpoint=checkpoint, **request.session_options())
    notes = []
    for n in caught:
        if issubclass(n.category, HvitNotice):
            notes.append(" ".join(str(n.message).split()))
        else:
            warnings.warn_explicit(n.message, n.category, n.filename, n.lineno)
    return session, notes


def run_job(session, request: ExportRequest, job: ExportTask, out: Path) -> dict:
    """One export's manifest entry. Input errors raise; a bug in one export is a failed entry (it must not sink
    the others), or raises with ``HVIT_DEBUG=1``."""
    try:
        return session.export(job.format, out, rewrite=job.rewritten, **request.export_options()).entry
    except HvitError:
        raise
    except Exception as e:  # noqa: BLE001
        if debug_enabled():
            raise
        return failed_entry(job.model, job.format, internal_error(e), rewritten=job.rewritten)


def run_local(request: ExportRequest, plans: list[ModelPlan], out: Path, record: Callable[[dict], None],
              say: Callable[[str], None]) -> None:
    """Every job of ``plans`` in this process, in order; ``record(entry)`` after each (the caller keeps the
    manifest up to date), ``say(line)`` for progress and notes."""
    for mp in plans:
        if mp.error is not None:
            record(failed_entry(mp.model, request.formats, mp.error))
            continue
        say(f"{mp.model}: building{' from ' + str(mp.checkpoint) if mp.checkpoint else ''} ...")
        try:
            session, notes = build_session(request, mp.model, mp.checkpoint)
        except HvitError as e:
            if len(plans) == 1:
                raise
            record(failed_entry(mp.model, request.formats, str(e)))
            continue
        for n in notes:
            say(f"note: {n}")
        for job in mp.jobs:
            say(f"{job.label} ...")
            record(run_job(session, request, job, out))
