"""hvit-export as users call it: exit codes, one-line errors, the table, the manifest, partial failures."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from hvit_deploy import create_model
from hvit_deploy.cli.export import main


def test_list_shows_the_zoo(cli):
    rc, out, _ = cli(main, "--list", "--family", "crossvit")
    assert rc == 0
    assert "crossvit_18_dagger_408" in out and "44.61M" in out and "32.409" in out and "408" in out


def test_list_rewrites(cli):
    rc, out, _ = cli(main, "--list-rewrites")
    assert rc == 0 and "twins.lsa_rank5" in out and "crossvit:coreml" in out


@pytest.mark.parametrize("args,message", [
    (["twins_svt_smal", "--to", "onnx"], "unknown model 'twins_svt_smal'; did you mean twins_svt_small"),
    (["twins_svt_s", "--to", "tensorrt"], "unknown format 'tensorrt'"),
    (["twins_svt_s", "--checkpoint", "/nonexistent/w.pth"], "checkpoint not found: /nonexistent/w.pth"),
    (["twins_svt_s", "crossvit_ti", "--checkpoint", __file__], "--checkpoint goes with exactly one model"),
    (["--family", "resnet"], "unknown family 'resnet'"),
    ([], "name at least one model"),
])
def test_bad_input_one_line_error(cli, args, message):
    rc, out, err = cli(main, *args)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hvit-export: error: ") and message in lines[0]
    assert "Traceback" not in err


def test_unwritable_output(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, _, err = cli(main, "crossvit_ti", "--out", blocker / "sub")
    assert rc == 2 and "cannot create output directory" in err and len(err.strip().splitlines()) == 1


def test_corrupt_checkpoint(cli, tmp_path):
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not a checkpoint at all")
    rc, _, err = cli(main, "crossvit_ti", "--checkpoint", bad, "--out", tmp_path / "o")
    assert rc == 2 and "cannot read checkpoint w.pth" in err.strip().splitlines()[-1]


def test_wrong_keys(cli, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(create_model("crossvit_9").state_dict(), path)
    rc, _, err = cli(main, "crossvit_ti", "--checkpoint", path, "--out", tmp_path / "o")
    assert rc == 2 and "tensors differ in shape" in err


@pytest.mark.slow
def test_one_failing_model_does_not_sink_the_others(cli, tmp_path):
    """crossvit_ti has weights in the folder, twins_svt_s does not: one export made, exit code 1."""
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(create_model("crossvit_ti").state_dict(), weights / "crossvit_tiny_224.pth")  # release file name
    out = tmp_path / "out"
    rc, stdout, err = cli(main, "twins_svt_s", "crossvit_ti", "--to", "onnx", "--checkpoint-dir", weights,
                          "--out", out)
    assert rc == 1
    assert "1 of 2 exports succeeded" in stdout and "crossvit_ti.onnx" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["path"] for a in manifest["artifacts"]] == ["crossvit_ti.onnx"]
    assert manifest["artifacts"][0]["checkpoint"].endswith("crossvit_tiny_224.pth")
    assert manifest["failures"][0]["model"] == "twins_svt_s"


def test_console_script_has_no_traceback_on_bad_input(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hvit_deploy.cli.export", "smt_tt", "--to", "onnx"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("hvit-export: error: unknown model")
