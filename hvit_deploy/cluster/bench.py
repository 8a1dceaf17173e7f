"""``hvit-bench --cluster ADDRESS --targets LABEL ...``: the benchmark on every node carrying each label.

A *target* is a Ray custom resource (``ray start ... --resources '{"jetson": 1}'``). For every node that carries
it, one Ray task asks for the whole node (all its CPUs and GPUs plus ``{LABEL: 1}``, pinned to that node), so no
other Ray work shares its cores while it times; the nodes of one label run one after another, different labels
at once. The task runs the ordinary ``hvit-bench`` (this profile, models, backends and flags; the worker
processes and protocol of :mod:`hvit_deploy.bench.runner`) on that node with ``--out`` in a temporary folder and
returns the results file, which holds that node's own environment. The caller writes one file per node:
``--out results.json`` gives ``results-LABEL.json`` (``results-LABEL-1.json``, ``-2``, ... when several nodes
carry the label), with ``cluster`` (target, node, address) added and ``command`` set to the caller's command,
and prints one table per target. ``hvit-bench compare`` refuses files from different CPUs, so keep a baseline
per target.

Exit code: the worst of the targets' (0, 1 some entry failed, 130 interrupted); a target whose node died or whose
run could not start counts as 1; a label no node carries is an input error (2) before anything runs.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from . import _ray

PROG = "hvit-bench"
# flags of hvit-bench that stay with the caller (or are refused) instead of going to each node's run
LOCAL_ONLY = {"cluster", "targets", "out", "plot", "format", "no_progress", "help", "list_profiles",
              "list_backends", "against", "against_out"}
FILE_FLAGS = {"profile", "plugin", "checkpoint"}  # their values are shipped when they name files


def _bench_task(argv: list[str], shipped: dict, target: str) -> dict:
    """On the target node: ``hvit-bench ARGV --out TMP`` in a child process importing the shipped package."""
    import hvit_deploy

    work = Path(tempfile.mkdtemp(prefix="hvit-cluster-bench-"))
    try:
        final = []
        for a in argv:
            if a.startswith("@ship:"):  # a shipped file: its copy here (MODEL=@ship:k for checkpoints)
                final.append(str(_ray.materialize(shipped[a[6:]], work / "in")))
            elif "=@ship:" in a:
                m, k = a.split("=@ship:", 1)
                final.append(f"{m}={_ray.materialize(shipped[k], work / 'in')}")
            else:
                final.append(a)
        out = work / "results.json"
        env = dict(os.environ)
        root = str(Path(hvit_deploy.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        cmd = [sys.executable, "-m", "hvit_deploy.cli.bench", *final, "--out", str(out), "--no-progress",
               "--format", "json"]
        proc = subprocess.run(cmd, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        text = out.read_text() if out.is_file() else None
        tail = " | ".join(line.strip() for line in proc.stderr.strip().splitlines()[-4:])
        return {"rc": proc.returncode, "results": text, "stderr": tail[-800:], "node": _ray.node_info(),
                "target": target}
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def node_argv(parser, args, ship) -> list[str]:
    """The flags given here, for each node's own ``hvit-bench`` (files replaced by shipped copies). Read from
    the parser's own table, so a flag added to hvit-bench later goes along without a change here."""
    argv: list[str] = []
    for action in parser._actions:  # noqa: SLF001 - argparse's table of options
        dest = action.dest
        if dest in LOCAL_ONLY or not action.option_strings:
            continue
        value = getattr(args, dest, None)
        if value is None or value is False or value == action.default:
            continue
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if value is True:
            argv.append(flag)
            continue
        values = value if isinstance(value, list) else [value]
        if dest in FILE_FLAGS:
            values = [ship(dest, v) for v in values]
        if action.nargs in ("+", "*") or isinstance(action.nargs, int):
            argv += [flag, *map(str, values)]
        else:  # a single value, repeated for action="append"
            for v in values:
                argv += [flag, str(v)]
    return argv


def out_paths(out: Path, label: str, count: int) -> list[Path]:
    if count == 1:
        return [out.with_name(f"{out.stem}-{label}{out.suffix}")]
    return [out.with_name(f"{out.stem}-{label}-{i + 1}{out.suffix}") for i in range(count)]


def run(args, argv: list[str], parser, out: Path, plugin_list: list[str]) -> int:
    """The cluster run of ``hvit-bench`` (flags already checked by the caller); its exit code."""
    from ..bench.results import exit_code, format_table
    from ..errors import HvitError
    from ..utils.io import atomic_write_json

    if not args.targets:
        raise _ray.ClusterError("--cluster needs --targets LABEL ... (the custom resources that name the nodes "
                                "to time on; see docs/cluster.md)")
    if args.against:
        raise HvitError("--against and --cluster do not go together: run --against on the target machine itself")
    labels = list(dict.fromkeys(args.targets))
    command = "hvit-bench " + " ".join(shlex.quote(a) for a in argv)
    with _ray.connected(args.cluster) as ray:
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
        shipped: dict[str, dict] = {}

        def ship(dest: str, value: str) -> str:
            model, _, path = value.rpartition("=") if dest == "checkpoint" and "=" in value and \
                not Path(value).exists() else ("", "", value)
            p = Path(path)
            if dest == "profile" and not (p.suffix in (".yaml", ".yml") or p.exists()):
                return value  # a shipped profile name
            if dest == "plugin" and not p.is_file():
                return value  # a module name: must import on the node
            key = f"{dest}{len(shipped)}"
            shipped[key] = _ray.ship(ray, p.resolve())
            return f"{model}=@ship:{key}" if model else f"@ship:{key}"

        sub_argv = node_argv(parser, args, ship)
        task = ray.remote(_bench_task)
        retry = dict(max_retries=1, retry_exceptions=_ray.retry_exceptions(ray))
        queues = {lab: list(ns) for lab, ns in by_label.items()}
        files = {lab: out_paths(out, lab, len(ns)) for lab, ns in by_label.items()}
        done_count = {lab: 0 for lab in labels}
        pending: dict = {}

        def submit(lab: str) -> None:
            if not queues[lab]:
                return
            node = queues[lab].pop(0)
            res = node.get("Resources", {})
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            ref = task.options(num_cpus=res.get("CPU", 0), num_gpus=res.get("GPU", 0), resources={lab: 1}, **retry,
                               scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                               ).remote(sub_argv, shipped, lab)
            pending[ref] = (lab, node)
            gpus = f", {res['GPU']:g} GPU(s)" if res.get("GPU") else ""
            print(f"{PROG}: target {lab}: node {node.get('NodeManagerAddress')} ({node['NodeID'][:12]}), "
                  f"{res.get('CPU', 0):g} CPU(s){gpus} ...",
                  file=sys.stderr, flush=True)

        for lab in labels:
            submit(lab)
        codes: list[int] = []
        reports: list[tuple[str, dict | None, str]] = []
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    lab, node = pending.pop(ref)
                    path = files[lab][done_count[lab]]
                    done_count[lab] += 1
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        res = {"rc": 1, "results": None, "stderr": _ray.describe_failure(e)}
                    doc = json.loads(res["results"]) if res.get("results") else None
                    if doc is None:
                        why = res.get("stderr") or f"hvit-bench exited with code {res.get('rc')}"
                        print(f"{PROG}: target {lab} ({node.get('NodeManagerAddress')}): no results: {why}",
                              file=sys.stderr)
                        codes.append(res.get("rc") if res.get("rc") in (2, 130) else 1)
                        reports.append((lab, None, why))
                    else:
                        doc["command"] = command
                        doc["cluster"] = {"target": lab, "address": args.cluster, **(res.get("node") or {}),
                                          "node_command": "hvit-bench " + " ".join(sub_argv)}
                        atomic_write_json(path, doc)
                        print(f"{PROG}: target {lab}: results: {path}", file=sys.stderr, flush=True)
                        codes.append(max(res["rc"], exit_code(doc)) if res["rc"] in (0, 1, 130) else res["rc"])
                        reports.append((lab, doc, str(path)))
                    submit(lab)
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
    for lab, doc, where in reports:
        node = (doc or {}).get("cluster", {})
        print(f"\n== target {lab}" + (f" (node {node.get('node_ip')}, {node.get('hostname')}): {where}"
                                      if doc else f": no results ({where})"))
        if doc:
            print(format_table(doc, args.format))
        if doc and args.plot:
            from ..bench.plot import plot_results
            from ..errors import OutputError

            plot = Path(args.plot)
            try:
                tag = Path(where).stem[len(out.stem) + 1:]  # LABEL or LABEL-2
                target_plot = plot.with_name(f"{plot.stem}-{tag}{plot.suffix}")
                print(f"plot: {plot_results(doc, target_plot)}", file=sys.stderr)
            except OutputError as e:
                print(f"{PROG}: plot not written: {e}", file=sys.stderr)
    return max(codes) if codes else 1
