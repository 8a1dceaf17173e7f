"""``--cluster``: hvit-export and hvit-bench on a real two-node Ray cluster on 127.0.0.1 (``ray.cluster_utils``),
compared with local runs: the same files, manifest entries and results entries; a crashed worker retried once,
then recorded; one-line errors. The module starts and stops its own cluster (in its own RAY_TMPDIR, so no other
Ray instance on the machine is seen or touched) and checks that no Ray process outlives it.
Skipped when Ray (the ``cluster`` extra) is not installed, except the test of that message itself."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hvit_deploy.cli.bench import main as bench_main
from hvit_deploy.cli.export import main as export_main

TESTS = Path(__file__).resolve().parent
MODELS = str(TESTS / "cluster_models.py")
BENCH_MODELS = str(TESTS / "bench_models.py")
FAST = str(TESTS / "data" / "bench_fast.yaml")
# fields of a manifest entry that say when and where it was made, not what it is
HOST_FIELDS = {"seconds", "export_s", "tools", "cluster"}


def _ray_processes(tag: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", tag], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if "pgrep" not in line]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from hvit_deploy.cluster import _ray

    # a short private temp dir: Ray's sockets live under it (path length limit) and so does its address file
    tmp = Path(tempfile.mkdtemp(prefix="hvit-ray-", dir="/tmp"))
    base = tmp_path_factory.mktemp("cluster")
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "HVIT_TEST_CRASH_MARKER", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
                                            "RAY_USAGE_STATS_ENABLED")}
    os.environ["RAY_TMPDIR"] = str(tmp)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["HVIT_TEST_CRASH_MARKER"] = str(base / "crashed-once")
    _ray._loopback_only(ray)
    caches = {lab: base / f"cache-{lab}" for lab in ("nodeA", "nodeB")}  # each node its own artifact cache
    c = None
    try:
        c = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=1, resources={"nodeA": 1}, node_ip_address="127.0.0.1", include_dashboard=False,
            env_vars={"HVIT_CACHE_DIR": str(caches["nodeA"])}))
        node_b = c.add_node(num_cpus=1, resources={"nodeB": 1}, node_ip_address="127.0.0.1",
                            env_vars={"HVIT_CACHE_DIR": str(caches["nodeB"])})
        c.tmp, c.base, c.caches = tmp, base, caches
        c.ids = {"nodeA": c.head_node.node_id, "nodeB": node_b.node_id}
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if c is not None:
            c.shutdown()
        left = []
        for _ in range(40):
            left = _ray_processes(str(tmp))
            if not left:
                break
            time.sleep(0.25)
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = True
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    p = tmp_path_factory.mktemp("recipe") / "cluster_test.yaml"
    p.write_text("family: cluster_test\ndescription: the tiny test models, exported as written\n")
    return p


def _digest(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".xml":
        # OpenVINO names nodes from process-wide counters (Model0 vs Model15, Constant_3474 vs Constant_13513):
        # the same graph converted in a process that converted other models first differs in those names only.
        # The weights (.bin) are compared byte for byte; the XML with those counters blanked.
        data = re.sub(rb'name="([A-Za-z]+)_?\d+"', rb'name="\1_N"', data)
    return hashlib.sha256(data).hexdigest()


def _comparable(entry: dict) -> dict:
    out = {k: v for k, v in entry.items() if k not in HOST_FIELDS}
    if entry.get("format") == "openvino":
        out.pop("sha256", None)  # the XML's hash (see _digest); bin_sha256 stays
        out.pop("size_bytes", None)
    return out


def test_export_matches_a_local_run(cluster, recipe, tmp_path, cli):
    args = ["cluster_tiny_a", "cluster_tiny_b", "--to", "onnx", "openvino", "--plugin", MODELS, "--recipe", recipe]
    rc, out, err = cli(export_main, *args, "--out", tmp_path / "cluster", "--cluster", cluster.address)
    assert rc == 0, err
    assert "4 of 4 exports succeeded" in out and "[4/4]" in err
    rc, _, err = cli(export_main, *args, "--out", tmp_path / "local")
    assert rc == 0, err

    remote = json.loads((tmp_path / "cluster" / "manifest.json").read_text())
    local = json.loads((tmp_path / "local" / "manifest.json").read_text())
    assert remote["failures"] == local["failures"] == []
    assert [_comparable(e) for e in remote["artifacts"]] == [_comparable(e) for e in local["artifacts"]]
    assert [(e["model"], e["format"]) for e in remote["artifacts"]] == [
        ("cluster_tiny_a", "onnx"), ("cluster_tiny_a", "openvino"), ("cluster_tiny_b", "onnx"),
        ("cluster_tiny_b", "openvino")]
    assert {e["cluster"]["node_id"] for e in remote["artifacts"]} <= set(cluster.ids.values())
    assert all(e["cluster"]["node_ip"] == "127.0.0.1" for e in remote["artifacts"])
    names = sorted(p.name for p in (tmp_path / "cluster").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "local").iterdir())  # same files, nothing left over
    assert names == ["cluster_tiny_a.bin", "cluster_tiny_a.onnx", "cluster_tiny_a.xml", "cluster_tiny_b.bin",
                     "cluster_tiny_b.onnx", "cluster_tiny_b.xml", "manifest.json"]
    for name in names[:-1]:
        assert _digest(tmp_path / "cluster" / name) == _digest(tmp_path / "local" / name), name
    for e in remote["artifacts"]:  # the manifest describes the files that came back
        assert hashlib.sha256((tmp_path / "cluster" / e["path"]).read_bytes()).hexdigest() == e["sha256"]


def test_a_crashed_worker_is_retried_once_then_recorded(cluster, recipe, tmp_path, cli):
    marker = Path(os.environ["HVIT_TEST_CRASH_MARKER"])
    marker.unlink(missing_ok=True)
    out = tmp_path / "out"
    rc, stdout, err = cli(export_main, "cluster_crash_once", "cluster_crash_always", "--to", "onnx", "--plugin",
                          MODELS, "--recipe", recipe, "--out", out, "--cluster", cluster.address)
    assert rc == 1, err
    assert marker.exists()  # the first attempt of cluster_crash_once did kill its worker
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["model"], e["status"]) for e in manifest["artifacts"]] == [("cluster_crash_once", "ok")]
    assert (out / "cluster_crash_once.onnx").is_file()
    assert [(f["model"], f["format"]) for f in manifest["failures"]] == [("cluster_crash_always", "onnx")]
    assert "died" in manifest["failures"][0]["error"] and "retry" in manifest["failures"][0]["error"]
    assert "1 of 2 exports succeeded" in stdout
    assert "cluster_crash_always onnx: FAILED" in err


def test_bench_one_results_file_per_target(cluster, tmp_path, cli):
    args = ["--models", "bench_tiny", "--backends", "torch", "--variants", "original", "--iters", "10",
            "--plugin", BENCH_MODELS, "--profile", FAST, "--no-progress"]
    rc, out, err = cli(bench_main, *args, "--out", tmp_path / "r.json", "--cluster", cluster.address,
                       "--targets", "nodeA", "nodeB")
    assert rc == 0, err
    rc, _, err = cli(bench_main, *args, "--out", tmp_path / "local.json")
    assert rc == 0, err
    local = json.loads((tmp_path / "local.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.json", "r-nodeA.json", "r-nodeB.json"]
    assert "== target nodeA" in out and "== target nodeB" in out
    # what an entry is and how it was run (the statistics are timings: another run, other numbers)
    same = ("model", "backend", "variant", "status", "threads", "batch_size", "artifact_precision",
            "compute_precision", "iterations", "rounds", "processes", "device", "input_shape", "rewrites", "ci_level",
            "artifact")
    for lab in ("nodeA", "nodeB"):
        doc = json.loads((tmp_path / f"r-{lab}.json").read_text())
        assert doc["status"] == "complete" and doc["schema"] == local["schema"]
        assert doc["cluster"]["target"] == lab and doc["cluster"]["node_id"] == cluster.ids[lab]
        assert doc["settings"] == local["settings"] and doc["profile"] == local["profile"]
        assert doc["command"].startswith("hvit-bench --models bench_tiny") and "--targets" in doc["command"]
        assert set(doc["environment"]) == set(local["environment"])  # that node's own, collected there
        assert doc["environment"]["cpu"]["model"] and doc["environment"]["versions"]["torch"]
        assert [{k: e.get(k) for k in same} for e in doc["results"]] == [{k: e.get(k) for k in same}
                                                                          for e in local["results"]]
        assert all(e["status"] == "ok" and e["iterations"] == 10 for e in doc["results"])
        assert all(e["compute_precision"] == "fp32" for e in doc["results"])
        assert doc["cluster"]["jobs"] == len(doc["results"])  # the caller's request, planned once, ran there


def test_bench_unknown_target_is_one_line(cluster, tmp_path, cli):
    rc, _, err = cli(bench_main, "--models", "bench_tiny", "--plugin", BENCH_MODELS, "--out", tmp_path / "r.json",
                     "--cluster", cluster.address, "--targets", "jetson")
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("hvit-bench: error: no live node of the cluster carries jetson")
    assert "nodeA" in lines[-1] and "nodeB" in lines[-1] and not list(tmp_path.iterdir())


def test_without_ray_the_flag_says_how_to_install_it(monkeypatch, tmp_path, cli):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is absent
    for main, args in ((export_main, ["efficientmod_xxs", "--out", tmp_path / "o", "--cluster", "auto"]),
                       (bench_main, ["--models", "efficientmod_xxs", "--out", tmp_path / "r.json",
                                     "--cluster", "auto", "--targets", "nuc"])):
        rc, _, err = cli(main, *args)
        assert rc == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and 'pip install "hvit-deploy[cluster]"' in lines[0], err
    assert not list(tmp_path.iterdir())
