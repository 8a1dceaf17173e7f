"""``hvit-bench --cluster ADDRESS --targets LABEL ...``: the benchmark on every node carrying each label.

A *target* is a Ray custom resource (``ray start ... --resources '{"jetson": 1}'``). For every node that carries
it, one Ray task asks for the whole node (all its CPUs and GPUs plus ``{LABEL: 1}``, pinned to that node), so no
other Ray work shares its cores while it times; the nodes of one label run one after another, different labels
at once. The task receives the caller's :class:`~hvit_deploy.bench.request.BenchRequest` (as JSON, with its
plugin and checkpoint files shipped by value) and executes the same jobs as a local run, with
``python -m hvit_deploy.bench.request`` on that node (the worker processes and protocol of
:mod:`hvit_deploy.bench.runner`); it returns the results file, which holds that node's own environment. The caller
writes one file per node: ``--out results.json`` gives ``results-LABEL.json`` (``results-LABEL-1.json``, ``-2``,
... when several nodes carry the label), with ``cluster`` (target, node, address) added and ``command`` set to the
caller's command, and prints one table per target. ``hvit-bench compare`` refuses files from different CPUs, so
keep a baseline per target.

Exit code: the worst of the targets' (0, 1 some entry failed, 130 interrupted); a target whose node died or whose
run could not start counts as 1; a label no node carries is an input error (2) before anything runs.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..bench.request import BenchRequest
from ..bench.schema import ResultsDoc
from . import _ray

PROG = "hvit-bench"


def _bench_task(request_json: str, shipped: dict, target: str) -> dict:
    """On the target node: the request's jobs in a child process importing the shipped package."""
    from hvit_deploy.resources import package_parent

    work = Path(tempfile.mkdtemp(prefix="hvit-cluster-bench-"))
    try:
        req = BenchRequest.model_validate_json(request_json)
        plugins = [str(_ray.materialize(p, work / "in")) if isinstance(p, dict) else p for p in shipped["plugins"]]
        ckpts = {m: str(_ray.materialize(c, work / "in")) for m, c in shipped["checkpoints"].items()}
        out = work / "results.json"
        node_req = req.model_copy(update={"plugins": plugins, "checkpoints": ckpts, "out": out})
        (work / "request.json").write_text(node_req.model_dump_json(), encoding="utf-8")
        env = dict(os.environ)
        root = str(package_parent())  # the shipped package this task imported
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        cmd = [sys.executable, "-m", "hvit_deploy.bench.request", str(work / "request.json")]
        proc = subprocess.run(cmd, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        text = out.read_text() if out.is_file() else None
        tail = " | ".join(line.strip() for line in proc.stderr.strip().splitlines()[-4:])
        return {"rc": proc.returncode, "results": text, "stderr": tail[-800:], "node": _ray.node_info(),
                "target": target, "jobs": len(req.jobs())}
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def out_paths(out: Path, label: str, count: int) -> list[Path]:
    if count == 1:
        return [out.with_name(f"{out.stem}-{label}{out.suffix}")]
    return [out.with_name(f"{out.stem}-{label}-{i + 1}{out.suffix}") for i in range(count)]


def _nodes_by_label(ray, labels: list[str]) -> dict[str, list[dict]]:
    """The live nodes carrying each label; a label no node carries is an input error naming those there are."""
    nodes = _ray.alive_nodes(ray)
    by_label = {lab: sorted((n for n in nodes if n.get("Resources", {}).get(lab, 0) >= 1),
                            key=lambda n: (n.get("NodeManagerAddress", ""), n["NodeID"])) for lab in labels}
    missing = [lab for lab, ns in by_label.items() if not ns]
    if missing:
        known = sorted({r for n in nodes for r in n.get("Resources", {})
                        if r not in ("CPU", "GPU", "memory", "object_store_memory")
                        and not r.startswith(("node:", "accelerator_type:"))})
        raise _ray.ClusterError(f"no live node of the cluster carries {', '.join(missing)}; the labels there: "
                                f"{', '.join(known) or 'none'} (ray start --resources '{{\"LABEL\": 1}}')")
    return by_label


def _ship(ray, req: BenchRequest) -> dict:
    """The request's files, by value: plugin files (module names pass as they are) and checkpoints."""
    return {"plugins": _ray.ship_plugins(ray, req.plugins),
            "checkpoints": {m: _ray.ship(ray, Path(p).resolve()) for m, p in req.checkpoints.items()}}


class _Dispatch:
    """The nodes of each label, one task at a time per label (labels at once), and what came back."""

    def __init__(self, ray, req: BenchRequest, shipped: dict, by_label: dict[str, list[dict]], out: Path):
        self.ray, self.shipped = ray, shipped
        self.request_json = req.model_copy(update={"out": None}).model_dump_json()
        self.task = ray.remote(_bench_task)
        self.retry = dict(max_retries=1, retry_exceptions=_ray.retry_exceptions(ray))
        self.queues = {lab: list(ns) for lab, ns in by_label.items()}
        self.files = {lab: out_paths(out, lab, len(ns)) for lab, ns in by_label.items()}
        self.done = {lab: 0 for lab in by_label}
        self.pending: dict = {}

    def submit(self, lab: str) -> None:
        if not self.queues[lab]:
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = self.queues[lab].pop(0)
        res = node.get("Resources", {})
        ref = self.task.options(num_cpus=res.get("CPU", 0), num_gpus=res.get("GPU", 0), resources={lab: 1},
                                **self.retry,
                                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                                ).remote(self.request_json, self.shipped, lab)
        self.pending[ref] = (lab, node)
        gpus = f", {res['GPU']:g} GPU(s)" if res.get("GPU") else ""
        print(f"{PROG}: target {lab}: node {node.get('NodeManagerAddress')} ({node['NodeID'][:12]}), "
              f"{res.get('CPU', 0):g} CPU(s){gpus} ...", file=sys.stderr, flush=True)

    def next_done(self) -> tuple[str, dict, dict, Path]:
        """Wait for one task: its label, node, answer and the file its results go to."""
        ready, _ = self.ray.wait(list(self.pending), num_returns=1)
        ref = ready[0]
        lab, node = self.pending.pop(ref)
        path = self.files[lab][self.done[lab]]
        self.done[lab] += 1
        try:
            res = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            res = {"rc": 1, "results": None, "stderr": _ray.describe_failure(e)}
        return lab, node, res, path

    def cancel(self) -> None:
        for ref in self.pending:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)


def _record(req: BenchRequest, address: str, lab: str, node: dict, res: dict,
            path: Path) -> tuple[int, tuple[str, ResultsDoc | None, str]]:
    """Write one node's results file (the caller's command, the cluster fields added); its exit code and report."""
    from ..bench.results import exit_code
    from ..bench.schema import check
    from ..utils.io import atomic_write_json

    if not res.get("results"):
        why = res.get("stderr") or f"hvit-bench exited with code {res.get('rc')}"
        print(f"{PROG}: target {lab} ({node.get('NodeManagerAddress')}): no results: {why}", file=sys.stderr)
        return (res.get("rc") if res.get("rc") in (2, 130) else 1), (lab, None, why)
    doc = check(json.loads(res["results"]))
    doc.command = req.command
    doc.cluster = {"target": lab, "address": address, **(res.get("node") or {}),
                   "node_command": "python -m hvit_deploy.bench.request REQUEST.json", "jobs": res.get("jobs")}
    atomic_write_json(path, doc.to_json())
    print(f"{PROG}: target {lab}: results: {path}", file=sys.stderr, flush=True)
    code = max(res["rc"], exit_code(doc)) if res["rc"] in (0, 1, 130) else res["rc"]
    return code, (lab, doc, str(path))


def _print_reports(reports: list, out: Path, table_format: str, plot: str | None) -> None:
    from ..bench.plot import plot_results
    from ..bench.results import format_table
    from ..errors import OutputError

    for lab, doc, where in reports:
        node = (doc.cluster if doc is not None else None) or {}
        print(f"\n== target {lab}" + (f" (node {node.get('node_ip')}, {node.get('hostname')}): {where}"
                                      if doc else f": no results ({where})"))
        if doc is None:
            continue
        print(format_table(doc, table_format))
        if plot:
            p = Path(plot)
            try:
                tag = Path(where).stem[len(out.stem) + 1:]  # LABEL or LABEL-2
                print(f"plot: {plot_results(doc, p.with_name(f'{p.stem}-{tag}{p.suffix}'))}", file=sys.stderr)
            except OutputError as e:
                print(f"{PROG}: plot not written: {e}", file=sys.stderr)


def run(req: BenchRequest, *, cluster: str, targets: list[str], table_format: str = "table",
        plot: str | None = None) -> int:
    """The jobs of ``req`` on every node carrying each of ``targets`` (Ray custom resources); its exit code."""
    if not targets:
        raise _ray.ClusterError("--cluster needs --targets LABEL ... (the custom resources that name the nodes "
                                "to time on; see docs/cluster.md)")
    if req.against is not None:
        from ..errors import HvitError

        raise HvitError("--against and --cluster do not go together: run --against on the target machine itself")
    labels = list(dict.fromkeys(targets))
    codes: list[int] = []
    reports: list = []
    with _ray.connected(cluster) as ray:
        by_label = _nodes_by_label(ray, labels)
        dispatch = _Dispatch(ray, req, _ship(ray, req), by_label, req.out)
        for lab in labels:
            dispatch.submit(lab)
        try:
            while dispatch.pending:
                lab, node, res, path = dispatch.next_done()
                code, report = _record(req, cluster, lab, node, res, path)
                codes.append(code)
                reports.append(report)
                dispatch.submit(lab)
        finally:
            dispatch.cancel()
    _print_reports(reports, req.out, table_format, plot)
    return max(codes) if codes else 1
