"""Formats: what an exporter writes. The format table (:mod:`.base`), one module per format (:mod:`.onnx`,
:mod:`.openvino`, :mod:`.coreml`, :mod:`.executorch`, :mod:`.litert`, each declaring its suffix, side files, default runtime, precisions and tools
once), the artifact helpers (:mod:`.artifact`) and the metadata written into artifacts (:mod:`.metadata`).

This package sits below :mod:`hvit_deploy.export` (the orchestration) and :mod:`hvit_deploy.quantize` (the
precision stage) and imports neither.
"""
from __future__ import annotations

from .artifact import ExportResult, artifact_stem, sha256_of, size_of
from .base import (FORMAT_TABLE, ExportJob, Format, UnknownFormatError, artifact_files, format_names, format_of_path,
                   get_format, parse_formats, register_format, skipped_by_all)

__all__ = ["FORMAT_TABLE", "ExportJob", "ExportResult", "Format", "UnknownFormatError", "artifact_files",
           "artifact_stem", "format_names", "format_of_path", "get_format", "parse_formats", "register_format",
           "sha256_of", "size_of", "skipped_by_all"]
