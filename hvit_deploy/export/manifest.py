"""``DIR/manifest.json``: one entry per artifact, updated in place (atomically) by every export into DIR."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from ..utils.io import atomic_write_json
from ..versions import tool_versions

MANIFEST = "manifest.json"


def _key(entry: dict) -> tuple:
    return (entry.get("model"), entry.get("format"), entry.get("path") or entry.get("precision"),
            tuple(entry.get("input_shape") or ()), bool(entry.get("rewritten")))


def update_manifest(out_dir: str | Path, entries: list[dict]) -> Path:
    """Merge ``entries`` into the manifest: artifacts go to ``artifacts`` (replacing older entries for the same
    file), failures to ``failures``; a failure is dropped once the same export succeeds."""
    path = Path(out_dir) / MANIFEST
    data = {"tool": "hvit-deploy", "artifacts": [], "failures": []}
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if isinstance(old, dict):
                data["artifacts"] = [e for e in old.get("artifacts", []) if isinstance(e, dict)]
                data["failures"] = [e for e in old.get("failures", []) if isinstance(e, dict)]
        except (OSError, json.JSONDecodeError):
            pass  # a broken manifest is rebuilt from what this run wrote
    for e in entries:
        if e.get("status") == "ok":
            data["artifacts"] = [a for a in data["artifacts"] if a.get("path") != e.get("path")] + [e]
            data["failures"] = [f for f in data["failures"]
                                if (f.get("model"), f.get("format"), f.get("rewritten")) !=
                                (e.get("model"), e.get("format"), e.get("rewritten"))]
        else:
            data["failures"] = [f for f in data["failures"] if _key(f) != _key(e)] + [e]
    data["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    data["tools"] = tool_versions()
    return atomic_write_json(path, {"tool": data["tool"], "updated": data["updated"], "tools": data["tools"],
                                    "artifacts": data["artifacts"], "failures": data["failures"]})
