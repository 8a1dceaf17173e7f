from __future__ import annotations

import os

import pytest
import torch

pytest_plugins = ("pytester",)  # tests/test_architecture.py runs pytest on a made-up suite

# Tests share two cores in CI; keep each test's torch work on one thread so pytest-xdist workers do not fight.
torch.set_num_threads(int(os.environ.get("HVIT_TEST_THREADS", "1")))

# The files that take longest in CI, heaviest first (seconds in CI's --durations, docs/testing.md "Keeping CI
# under 15 minutes"). Under xdist (`--dist loadfile --no-loadscope-reorder`, pyproject.toml) the two workers take
# files in collection order, a new one whenever theirs has two tests left: these first, then every other file in
# the usual order. Heaviest first keeps the two workers' finishing times close; xdist's own order (files with the
# most tests first) left the few-test, heavy files (cluster, INT8 bench, batch sweep) for the end, where one of
# them could keep one worker busy alone. A file not listed still runs, only later; refresh the list from a
# whole-suite run's `--durations=60` when the balance drifts.
HEAVY_FIRST = (
    "test_bench_cli.py",         # ~230 s: hvit-bench end to end, --against, Ctrl-C
    "test_mobile_formats.py",    # ~150 s: ExecuTorch and LiteRT exports, INT8 through PT2E, hvit-bench
    "test_cluster.py",           # ~115 s: a two-node Ray cluster
    "test_bench_int8.py",        # ~95 s: INT8 beside FP32 in hvit-bench, benchmarks/int8_vs_fp32.py
    "test_batch_sweep.py",       # ~75 s
    "test_int8.py",              # ~70 s
    "test_gpu_forms.py",         # ~45 s
    "test_exporter_fallbacks.py",
    "test_acmix.py",
    "test_benchmark_scripts.py",
    "test_ladder.py",
    "test_efficientmod.py",
    "test_finetuned.py",
    "test_export.py",
    "test_dynamic_batch.py",
    "test_bf16.py",
    "test_cli_flags.py",
    "test_features.py",
    "test_pixel_input.py",
    "test_smt.py",
    "test_coreml_readback.py",
    "test_cli_export.py",
)


def pytest_collection_modifyitems(config, items):
    """Heavy files first, in the xdist workers only (a serial run keeps the collection order); within a file and
    among the files not listed the order is unchanged (a stable sort)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def cli(capsys):
    """Run a console entry point in-process: returns (exit code, stdout, stderr)."""

    def run(main, *args):
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
