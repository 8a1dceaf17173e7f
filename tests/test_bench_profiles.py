"""Benchmark profiles: the shipped protocols, overrides, and one-line errors for bad fields."""
from __future__ import annotations

import pytest

from hvit_deploy.bench import profiles
from hvit_deploy.errors import ConfigError
from hvit_deploy.resources import profiles_dir


def test_shipped_profiles():
    names = profiles.list_profiles()
    assert {"cpu-paper", "gpu", "ci"} <= set(names)
    paper = profiles.load_profile()  # the default
    assert paper.name == "cpu-paper"
    assert (paper.iterations, paper.threads, paper.batch_size) == (4000, 4, 1)
    assert {"onnxruntime", "openvino", "torch"} <= set(paper.backends)
    gpu = profiles.load_profile("gpu")
    from hvit_deploy.runtimes import gpu_runtimes

    assert {"torch-cuda", "onnxruntime-cuda", "openvino-gpu"} <= set(gpu.backends) <= set(gpu_runtimes())
    ci = profiles.load_profile("ci")
    assert ci.iterations * 1 < paper.iterations and ci.rounds >= 10  # enough round medians to test on
    from hvit_deploy.registry import canonical_name

    for name in names:  # every shipped file parses, lives where the package looks, names registered models
        assert (profiles_dir() / f"{name}.yaml").is_file()
        for model in profiles.load_profile(name).models:
            assert canonical_name(model) == model


def test_override_replaces_fields_and_revalidates():
    p = profiles.override(profiles.load_profile("ci"), threads=3, iterations=90, **{"warmup.min_runs": 7})
    assert (p.threads, p.iterations, p.warmup.min_runs) == (3, 90, 7)
    assert p.warmup.window == profiles.load_profile("ci").warmup.window
    with pytest.raises(ConfigError, match=r"threads: Input should be greater than or equal to 1; got 0"):
        profiles.override(p, threads=0)
    with pytest.raises(ConfigError, match="rounds .* exceeds iterations"):
        profiles.override(p, iterations=5, rounds=12)


def test_bad_fields_are_refused_with_their_location(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("iterations: 100\nwarmup:\n  min_runs: 0\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: warmup.min_runs: .*greater than or equal to 1; got 0"):
        profiles.load_profile(str(f))
    f.write_text("iterations: 100\nthreds: 4\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: threds: Extra inputs are not permitted"):
        profiles.load_profile(str(f))
    f.write_text("backends: [torch, tensorrt]\n")
    with pytest.raises(ConfigError, match=r"backends\[1\]"):
        profiles.load_profile(str(f))
    f.write_text("iterations: 100\nwarmup: {min_runs: 5\n")
    with pytest.raises(ConfigError, match=r"mine.yaml:3:1: invalid YAML"):
        profiles.load_profile(str(f))
    with pytest.raises(ConfigError, match="unknown profile 'nope'; shipped profiles: .*ci"):
        profiles.load_profile("nope")
