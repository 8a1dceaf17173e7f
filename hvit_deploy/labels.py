"""Class labels for a classifier: read from a file, checked against the model's class count.

Accepted files: plain text with one class name per line (trailing blank lines ignored), a JSON list of names, or a
JSON object mapping every index ``0..N-1`` to its name (``{"0": "cat", "1": "dog"}``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import LabelsError


def read_labels(path: str | os.PathLike) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise LabelsError(f"labels file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f"cannot read labels file {p.name}: {e}") from None
    if not text.strip():
        raise LabelsError(f"labels file {p.name} is empty")
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelsError(f"labels file {p.name} is not valid JSON: {e.msg} (line {e.lineno})") from None
        return _from_json(data, p.name)
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    empty = [i + 1 for i, line in enumerate(lines) if not line]
    if empty:
        raise LabelsError(f"labels file {p.name}: line {empty[0]} is empty (one class name per line)")
    return lines


def _from_json(data, name: str) -> list[str]:
    if isinstance(data, list):
        labels = data
    elif isinstance(data, dict):
        try:
            index = {int(k): v for k, v in data.items()}
        except (TypeError, ValueError):
            raise LabelsError(f"labels file {name}: the JSON object's keys must be class indices 0..N-1") from None
        missing = sorted(set(range(len(index))) - set(index))
        if missing:
            raise LabelsError(f"labels file {name}: the JSON object's keys must be 0..{len(index) - 1}; "
                              f"index {missing[0]} is missing")
        labels = [index[i] for i in range(len(index))]
    else:
        raise LabelsError(f"labels file {name}: JSON must be a list of names or an {{index: name}} object")
    if not labels:
        raise LabelsError(f"labels file {name} holds no labels")
    bad = next((i for i, v in enumerate(labels) if not isinstance(v, str) or not v.strip()), None)
    if bad is not None:
        raise LabelsError(f"labels file {name}: label {bad} is not a non-empty string ({labels[bad]!r})")
    return [v.strip() for v in labels]


def check_labels(labels: list[str], num_classes: int, source: str = "labels") -> list[str]:
    if num_classes == 0:
        raise LabelsError(f"{source}: labels need a classifier head, but the model is built without one "
                          f"(num_classes 0)")
    if len(labels) != num_classes:
        raise LabelsError(f"{source} has {len(labels)} labels but the model has {num_classes} classes")
    return labels


def labels_sha256(labels: list[str]) -> str:
    """A digest of the labels in order (newline-joined, UTF-8), recorded in the manifest."""
    return hashlib.sha256("\n".join(labels).encode("utf-8")).hexdigest()
