"""What every command shares (hvit_deploy.cli.common.run_main): an input error is one line and its exit code,
Ctrl-C keeps what was finished and exits 130, a closed pipe exits 141 quietly, and a bug is one line with exit 3
(its traceback only with HVIT_DEBUG=1); the versions recorded in manifests and results."""
from __future__ import annotations

import re

import pytest

from hvit_deploy.cli.common import run_main
from hvit_deploy.errors import HvitError


def _raise(exc):
    def fn():
        raise exc
    return fn


def test_input_error_is_one_line_with_its_exit_code(capsys):
    assert run_main("hvit-x", lambda: 0) == 0
    assert run_main("hvit-x", _raise(HvitError("unknown model 'smt_tt'; did you mean smt_t?"))) == 2
    err = capsys.readouterr().err
    assert err == "hvit-x: error: unknown model 'smt_tt'; did you mean smt_t?\n"


def test_interrupt_pipe_and_bug(capsys, monkeypatch):
    monkeypatch.delenv("HVIT_DEBUG", raising=False)
    assert run_main("hvit-x", _raise(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "hvit-x: interrupted; what was finished is kept\n"
    assert run_main("hvit-x", _raise(BrokenPipeError())) == 141
    assert capsys.readouterr().err == ""
    assert run_main("hvit-x", _raise(ValueError("bad\n  thing " + "x" * 600))) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("hvit-x: internal error: ValueError: bad thing xxx") and "HVIT_DEBUG=1" in err
    assert len(err) < 520  # the message is cut at 400 characters


def test_bug_with_debug_prints_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv("HVIT_DEBUG", "1")
    assert run_main("hvit-x", _raise(ValueError("bad"))) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith("for the traceback)")


def test_versions_of_this_checkout():
    from hvit_deploy import __version__
    from hvit_deploy.resources import package_parent
    from hvit_deploy.versions import git_commit, tool_versions

    import importlib.metadata as md

    v = tool_versions()
    assert v["torch"] == md.version("torch") and v["hvit-deploy"] == md.version("hvit-deploy") == __version__
    commit = git_commit()
    if not (package_parent() / ".git").exists():
        pytest.skip("not running from a git checkout")
    assert commit is not None and re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)
