"""Atomic writes: readers see the old file or the new one, with the user's usual permissions."""
from __future__ import annotations

import json
import os
import stat

import pytest

from hvit_deploy.errors import OutputError
from hvit_deploy.utils.io import atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "r.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert sorted(os.listdir(p.parent)) == ["r.json"]


def test_atomic_write_uses_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "r.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_parent_is_a_file_gives_one_line_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="cannot create output directory") as e:
        atomic_write_text(tmp_path / "f" / "r.md", "x")
    assert "\n" not in str(e.value)


def test_failed_replace_keeps_old_file_and_cleans_temp(tmp_path, monkeypatch):
    p = atomic_write_text(tmp_path / "r.md", "old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OutputError, match="No space left"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.md"]
