"""Atomic writes and YAML loading with messages that point at the bad spot."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, OutputError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output directory {p}: {e.strerror or e}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {p} is not writable")
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of one."""
    p = Path(path)
    ensure_writable_dir(p.parent if str(p.parent) else ".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as e:
        raise OutputError(f"cannot write {p}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the user's usual permissions
        os.replace(tmp, p)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OutputError(f"cannot write {p}: {e.strerror or e}") from None
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_yaml(path: str | os.PathLike) -> Any:
    """``yaml.safe_load`` with a one-line error naming the file, line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {p}: {e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise ConfigError(f"{where}: invalid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None


def pydantic_error_message(source: str, err) -> str:
    """One line naming the first bad field of a pydantic ValidationError, e.g. ``ci.yaml: warmup.min_runs: ...``."""
    first = err.errors()[0]
    loc = ".".join(str(x) if not isinstance(x, int) else f"[{x}]" for x in first.get("loc", ())).replace(".[", "[")
    msg = first.get("msg", "invalid value")
    extra = f" ({len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    got = first.get("input")
    got_text = f"; got {got!r}" if got is not None and not isinstance(got, (dict, list)) else ""
    return f"{source}: {loc or '(top level)'}: {msg}{got_text}{extra}"


def parse_strict(model_cls, data, source: str, what: str, *, empty_ok: bool = False):
    """Validate YAML-loaded ``data`` against the pydantic ``model_cls`` (recipes, profiles); a bad field is
    refused with a one-line :class:`ConfigError` naming ``source`` and the field's location. The parsed object
    gets ``source`` set."""
    from pydantic import ValidationError

    if data is None and empty_ok:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {what} is a mapping of fields, not {type(data).__name__}")
    try:
        obj = model_cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(pydantic_error_message(source, e)) from None
    obj.source = source
    return obj
