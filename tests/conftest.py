from __future__ import annotations

import os

import pytest
import torch

# Tests share two cores in CI; keep each test's torch work on one thread so pytest-xdist workers do not fight.
torch.set_num_threads(int(os.environ.get("HVIT_TEST_THREADS", "1")))


@pytest.fixture
def cli(capsys):
    """Run a console entry point in-process: returns (exit code, stdout, stderr)."""

    def run(main, *args):
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
