"""Exporters (ONNX + onnxsim, OpenVINO IR, Core ML ML program), each followed by validation against eager
PyTorch, and the manifest that records what was written."""
from __future__ import annotations

from .manifest import update_manifest
from .pipeline import FORMATS, ExportResult, ExportSession, export_model

__all__ = ["FORMATS", "ExportResult", "ExportSession", "export_model", "update_manifest"]
