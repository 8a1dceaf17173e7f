"""The export orchestration: a checked request (:mod:`.request`), its plan (model x format x form jobs), the
session that builds a model once and exports it (:mod:`.pipeline`), running the plan (:mod:`.run`) and the
manifest that records what was written. The formats themselves (one exporter module each) are in
:mod:`hvit_deploy.formats`."""
from __future__ import annotations

from ..formats.artifact import ExportResult
from .manifest import update_manifest
from .pipeline import FORMATS, ExportSession, export_model
from .request import ExportRequest, ExportTask, ModelPlan, failed_entry, plan

__all__ = ["FORMATS", "ExportRequest", "ExportResult", "ExportSession", "ExportTask", "ModelPlan", "export_model",
           "failed_entry", "plan", "update_manifest"]
