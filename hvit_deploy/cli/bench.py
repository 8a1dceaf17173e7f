"""``hvit-bench``: batch-1 latency of exported models (or a batch sweep: ``--batch 1 2 4 ...``); ``hvit-bench compare``: CI regression report.

Examples::

    hvit-bench --threads 4                                  # the default profile (papers' CPU protocol)
    hvit-bench --models efficientmod_xxs --backends torch onnxruntime openvino --threads 2 --iters 60
    hvit-bench --profile ci --out candidate.json
    hvit-bench --models smt_t --variants rewritten original --op-profile --plot smt.png
    hvit-bench compare baseline.json candidate.json --report report.md --threshold 5%

Exit codes of ``hvit-bench``: 0 all entries measured (or skipped for lack of hardware), 1 some entry failed,
2 bad input, 3 internal error, 130 interrupted. Of ``hvit-bench compare``: 0 no regression, 1 regression,
2 unusable input, 3 internal error, 4 (with ``--strict``) entries missing or not comparable, 5 (with
``--require-power``) inconclusive: some entry unchanged but unable to detect the slowdown asked for.
Internal errors are bugs: one line, and the traceback with HVIT_DEBUG=1.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from ..errors import HvitError, OutputError

TABLE_FORMATS = ("table", "md", "csv", "json")   # how the summary is printed (not export formats)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other input error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from ..bench.profiles import DEFAULT_PROFILE
    from ..runtimes import runtime_names

    ap = _Parser(
        prog="hvit-bench",
        description="Batch-1 latency of hybrid vision transformers on torch eager, ONNX Runtime, OpenVINO, "
                    "CUDA and Core ML, each model and backend in its own process. "
                    "`hvit-bench compare BASELINE CANDIDATE` compares two results files (see `hvit-bench compare -h`).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Protocol fields come from the profile (--profile, default %s); the flags below override them." % DEFAULT_PROFILE,
    )
    ap.add_argument("--profile", metavar="NAME|FILE.yaml",
                    help=f"protocol to follow (shipped: see --list-profiles; default {DEFAULT_PROFILE})")
    ap.add_argument("--models", nargs="+", metavar="MODEL", help="models to time (default: the profile's, or the "
                    "smallest variant of every family)")
    ap.add_argument("--backends", nargs="+", metavar="RUNTIME",
                    help="runtimes to time (the registered ones: " + ", ".join(runtime_names()) + ")")
    from ..bench.request import FORMS

    ap.add_argument("--variants", nargs="+", metavar="FORM", choices=FORMS,
                    help="forms to time side by side: rewritten (default), original, int8 (the rewritten form "
                         "quantized as hvit-export --precision int8 does it; needs --calibration), bf16 (the "
                         "rewritten FP32 form computed in bfloat16: OpenVINO's bf16 hint, torch's bf16 autocast; "
                         "gated against eager FP32 first; skipped with the reason on a CPU without BF16)")
    ap.add_argument("--precision", choices=["auto"],
                    help="auto: time every precision each backend has here side by side (FP32; INT8 with "
                         "--calibration; BF16 where the CPU has it), each gated, and print the ladder and the "
                         "pick: the fastest that passes (results file: ladders; docs/bench.md)")
    ap.add_argument("--calibration", metavar="DIR", help="calibration images for the int8 variant (searched "
                    "recursively; the accuracy gate's held-out images are split off it unless --eval-data)")
    ap.add_argument("--calibration-size", type=int, metavar="N", help="calibration images used by the int8 variant")
    ap.add_argument("--eval-data", metavar="DIR", help="held-out images for the int8 and bf16 variants' accuracy "
                    "gates (bf16 without --calibration or --eval-data: the shipped photos)")
    ap.add_argument("--no-rewrite", action="store_true", help="time the model as written (same as --variants original)")
    ap.add_argument("--threads", type=int, metavar="N", help="intra-op threads of every CPU runtime")
    ap.add_argument("--iters", type=int, metavar="N", help="timed runs per entry")
    ap.add_argument("--warmup", type=int, metavar="N", help="warm-up runs before the settle check")
    ap.add_argument("--rounds", type=int, metavar="R", help="interleaved rounds (iters/R runs per entry per round)")
    ap.add_argument("--processes", type=int, metavar="P",
                    help="worker processes per entry, rounds shared among them (captures process-to-process noise)")
    ap.add_argument("--input-size", type=int, metavar="PX", help="square input side (default: the model's own)")
    ap.add_argument("--batch", type=int, nargs="+", metavar="B",
                    help="batch sizes to time, each its own entry with latency per batch and images/s (default 1; "
                         "a sweep: --batch 1 2 4 8 16 32 64); artifact runtimes time a dynamic-batch export "
                         "above batch 1")
    ap.add_argument("--checkpoint", action="append", metavar="[MODEL=]PATH",
                    help="official weights (timing does not depend on them; accepted for completeness)")
    _add_elsewhere_flags(ap)
    ap.add_argument("--op-profile", action="store_true", help="also list the top operator types by time")
    ap.add_argument("--out", metavar="FILE.json",
                    help="results file, rewritten after every entry (default: results-<date>-<time>.json)")
    ap.add_argument("--format", choices=TABLE_FORMATS, default="table", help="summary printed at the end")
    ap.add_argument("--plot", metavar="FILE.png", help="latency distributions per model and backend")
    ap.add_argument("--timeout", type=float, metavar="S", help="stop a worker silent for this long")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--list-profiles", action="store_true", help="list the shipped profiles and exit")
    ap.add_argument("--list-backends", action="store_true", help="say which backends can run here and exit")
    return ap


def _add_elsewhere_flags(ap: argparse.ArgumentParser) -> None:
    """Flags that time somewhere else too: another checkout (--against), a Ray cluster (--cluster), plugins."""
    ap.add_argument("--against", metavar="CHECKOUT",
                    help="also time another hvit-deploy checkout (e.g. the base branch), interleaved round by round "
                         "with this one, for a side-by-side `hvit-bench compare` (needs --rounds 2 or more)")
    ap.add_argument("--pair-block", type=int, metavar="K",
                    help="with --against: time base and head artifacts in one worker process, alternating blocks "
                         "of K runs (ABBA); 0 times each side in its own process (default: the profile's)")
    ap.add_argument("--against-out", metavar="FILE.json",
                    help="results of the --against checkout (default: the --out name with -base)")
    ap.add_argument("--plugin", action="append", metavar="FILE.py|MODULE",
                    help="import this first (registers models of your own; also imported in every worker)")
    ap.add_argument("--cluster", metavar="auto|ADDRESS",
                    help="run on the nodes of this Ray cluster that carry the --targets labels, one results file "
                         "per node (needs hvit-deploy[cluster]; see docs/cluster.md)")
    ap.add_argument("--targets", nargs="+", metavar="LABEL",
                    help="with --cluster: the custom resources naming the nodes to time on (results-LABEL.json)")


def build_compare_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="hvit-bench compare",
        description="Compare two hvit-bench results files entry by entry (model, backend, variant) and give each "
                    "a verdict: regression, improvement, unchanged, new, missing or not comparable.",
        epilog="Exit codes: 0 no regression, 1 regression, 2 unusable input, 3 internal error, 5 (--require-power) "
               "inconclusive: an entry could not have detected the slowdown asked for, 4 (--strict) "
               "missing or not comparable entries.")
    ap.add_argument("baseline", metavar="BASELINE.json")
    ap.add_argument("candidate", metavar="CANDIDATE.json")
    ap.add_argument("--report", metavar="FILE.md", help="write the Markdown report here")
    ap.add_argument("--threshold", default="5%", help="smallest change that counts (default 5%%)")
    ap.add_argument("--alpha", type=float, default=0.01, help="significance level of the test (default 0.01)")
    ap.add_argument("--plot", metavar="FILE.png", help="baseline vs candidate distributions")
    ap.add_argument("--format", choices=("table", "md", "json"), default="table", help="what to print")
    ap.add_argument("--require-power", nargs="?", const="5%", action="append", metavar="[RUNTIME=]SLOWDOWN",
                    help="exit 5 when an entry is unchanged but its run could not have detected a slowdown of "
                         "SLOWDOWN (default 5%%) with 80%% power (inconclusive: measure more); repeat as "
                         "RUNTIME=SLOWDOWN to give one runtime its own figure (e.g. --require-power 5%% "
                         "--require-power torch=15%%; the pull-request gate passes 5%%)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 4 when entries are missing or not comparable (and nothing regressed)")
    ap.add_argument("--allow-env-diff", action="store_true",
                    help="compare even when the machine or runtime versions differ (differences still reported)")
    return ap


# ------------------------------------------------------------------------------------------------ checking


def check_out_path(path: Path) -> None:
    from ..utils.io import ensure_writable_dir

    if path.is_dir():
        raise OutputError(f"--out {path} is a directory; give a file name like {path / 'results.json'}")
    ensure_writable_dir(path.parent if str(path.parent) else ".")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"--out {path} is not writable")


def check_plot_path(path: Path) -> None:
    from ..utils.io import ensure_writable_dir

    if path.suffix.lower() != ".png":
        raise HvitError(f"--plot {path}: the plot is a PNG; use a .png name")
    ensure_writable_dir(path.parent if str(path.parent) else ".")


# ---------------------------------------------------------------------------------------------------- main


def _power_targets(specs: list[str]) -> tuple[float, dict[str, float]]:
    """``--require-power`` values: ``5%`` (every entry) and ``RUNTIME=10%`` (that runtime's own figure)."""
    from ..bench.compare import parse_threshold
    from ..runtimes import canonical_runtime

    default, own = None, {}
    for spec in specs:
        name, _, value = spec.rpartition("=")
        try:
            v = parse_threshold(value)
        except ValueError as e:
            raise HvitError(f"--require-power {spec}: {e}") from None
        if not name:
            default = v
            continue
        try:
            own[canonical_runtime(name)] = v
        except Exception as e:  # unknown runtime: one line with close names
            raise HvitError(f"--require-power {spec}: {e.args[0] if e.args else e}") from None
    return (0.05 if default is None else default), own


def main(argv: list[str] | None = None) -> int:
    from .common import run_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        return run_main("hvit-bench compare", lambda: compare_main(argv[1:]))
    return run_main("hvit-bench", lambda: bench_main(argv))


def request_from_args(args: argparse.Namespace, argv: list[str]):
    """The one :class:`~hvit_deploy.bench.request.BenchRequest` of this command line (checked: one line on bad
    input)."""
    from ..bench.request import build_request

    out = Path(args.out) if args.out else Path(f"results-{time.strftime('%Y%m%d-%H%M%S')}.json")
    check_out_path(out)
    forms = _auto_forms(args) if args.precision == "auto" else args.variants
    req = build_request(
        profile=args.profile, models=args.models, checkpoints=args.checkpoint, plugins=args.plugin, out=out,
        command="hvit-bench " + " ".join(shlex.quote(a) for a in argv),
        against=None if args.cluster else args.against, against_out=None if args.cluster else args.against_out,
        backends=args.backends, forms=forms, no_rewrite=args.no_rewrite, threads=args.threads,
        iterations=args.iters, rounds=args.rounds, processes=args.processes, input_size=args.input_size,
        batch=args.batch,
        timeout_s=args.timeout, pair_block=args.pair_block, calibration=args.calibration,
        calibration_size=args.calibration_size, eval_data=args.eval_data, warmup=args.warmup,
        op_profile=args.op_profile)
    if req.against_out is not None:
        check_out_path(req.against_out)
    if args.plot:
        check_plot_path(Path(args.plot))
    return req


def _auto_forms(args: argparse.Namespace) -> list[str]:
    """``--precision auto``: the forms that time every rung of the backends asked for (or the profile's)."""
    from ..bench.ladder import ladder_forms
    from ..bench.profiles import load_profile
    from ..bench.request import resolve_backends, resolve_models

    if args.variants or args.no_rewrite:
        raise HvitError("--precision auto picks the forms itself (each backend's precisions); leave out "
                        + ("--variants" if args.variants else "--no-rewrite"))
    prof = load_profile(args.profile)
    backends = resolve_backends(args.backends) if args.backends else prof.backends
    if args.plugin:
        from ..bench import plugins

        plugins.load(plugins.normalise(args.plugin))
    models = resolve_models(args.models or prof.models)
    forms = ladder_forms(backends, models, calibration=bool(args.calibration or prof.calibration))
    if args.calibration and "int8" not in forms:
        raise HvitError(f"--calibration: none of {', '.join(backends)} has an INT8 rung (onnxruntime and openvino do)")
    return forms


def bench_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.cluster:
        from ..cluster._ray import require_ray

        require_ray()  # one line saying how to install it, before any work
        if args.against:
            raise HvitError("--against and --cluster do not go together: run --against on the target machine itself")
    elif args.targets:
        raise HvitError("--targets goes with --cluster ADDRESS")
    if args.list_profiles:
        return list_profiles()
    if args.list_backends:
        return list_backends(args)
    req = request_from_args(args, argv)
    if args.cluster:  # the same jobs on each target node of a Ray cluster (hvit_deploy/cluster/bench.py)
        from ..cluster import bench as cluster_bench

        return cluster_bench.run(req, cluster=args.cluster, targets=args.targets or [], table_format=args.format,
                                 plot=args.plot)
    return run_local(req, table_format=args.format, plot=args.plot, progress=not args.no_progress,
                     ladder=args.precision == "auto")


def run_local(req, *, table_format: str = "table", plot: str | None = None, progress: bool = True,
              ladder: bool = False) -> int:
    """Run ``req`` here, print its table (and the side-by-side comparison with --against); the exit code."""
    from ..bench.results import exit_code, failed_labels, format_table
    from ..bench.runner import Runner

    prof = req.profile
    print(f"hvit-bench: profile {prof.name}: {len(req.models)} model(s) × {len(prof.backends)} backend(s) × "
          f"{len(prof.variants)} variant(s), {prof.iterations} runs in {prof.rounds} round(s), "
          f"{prof.threads} thread(s) → {req.out}", file=sys.stderr)
    runner = Runner(req, progress=progress)
    doc = runner.run().doc
    print(format_table(doc, table_format))
    _print_ladders(req, doc, table_format, ladder)
    base_doc = runner.sides[1].results.doc if req.against is not None else None
    if base_doc is not None:
        _print_against(req, doc, base_doc, table_format)
    if plot:
        _plot(doc, plot)
    print(f"results: {req.out}", file=sys.stderr)
    code = max(exit_code(doc), exit_code(base_doc) if base_doc is not None else 0)
    if code == 1:
        failed = failed_labels(doc)
        print(f"hvit-bench: {len(failed)} entr{'y' if len(failed) == 1 else 'ies'} failed: {', '.join(failed)}",
              file=sys.stderr)
    return code


def _print_ladders(req, doc, table_format: str, ladder: bool) -> None:
    """``--precision auto``: the ladders (also written into the results file, ``ladders``) and the picks; any
    run: the verdict of an int8 entry that does not pay (below 1.2× its FP32 in this run)."""
    from ..bench.ladder import build_ladders, format_ladders, int8_verdicts

    if not ladder:
        for line in int8_verdicts(doc):
            print(f"hvit-bench: {line}", file=sys.stderr)
        return
    ladders = build_ladders(doc, req.backends, calibration=bool(req.profile.calibration),
                            results=str(req.out) if req.out else None)
    doc.ladders = [lad.to_json() for lad in ladders]
    if req.out is not None:
        from ..utils.io import atomic_write_json

        atomic_write_json(req.out, doc.to_json())
    if table_format in ("table", "md"):
        print("\nprecision ladder (--precision auto):")
        print(format_ladders(ladders, table_format, doc.results))
    for lad in ladders:
        print(f"hvit-bench: pick: {lad.model} {lad.runtime}: {lad.pick or 'none (no rung passed and ran)'}"
              + (f" ({lad.pick_note})" if lad.pick_note else ""), file=sys.stderr)
    for line in (f"{lad.model}: {r.verdict}" for lad in ladders for r in lad.rungs if r.verdict):
        print(f"hvit-bench: {line}", file=sys.stderr)  # named: a run of several models has one verdict per model


def _print_against(req, doc, base_doc, table_format: str) -> None:
    from ..bench.compare import compare_docs
    from ..bench.report import terminal
    from ..bench.results import format_table

    if table_format in ("table", "md"):
        print(f"\n--against {req.against} (results: {req.against_out}):")
        print(format_table(base_doc, table_format))
    cmp = compare_docs(base_doc, doc)
    print(f"\nthis checkout vs {req.against}, side by side: " + terminal(cmp), file=sys.stderr)
    print(f"verdict: hvit-bench compare {req.against_out} {req.out}", file=sys.stderr)


def _plot(doc, plot: str, prog: str = "hvit-bench") -> None:
    from ..bench.plot import plot_results

    try:
        print(f"plot: {plot_results(doc, plot)}", file=sys.stderr)
    except OutputError as e:
        print(f"{prog}: plot not written: {e}", file=sys.stderr)


def list_profiles() -> int:
    from ..bench import profiles

    for name in profiles.list_profiles():
        p = profiles.load_profile(name)
        print(f"{name:12s} {' '.join(p.description.split())}")
    return 0


def list_backends(args: argparse.Namespace) -> int:
    """``--list-backends``: which runtimes (the asked ones, else every registered one) can run here."""
    from ..bench.profiles import Profile, override
    from ..bench.request import BenchRequest, resolve_backends
    from ..bench.runner import Runner
    from ..runtimes import runtime_names

    backends = resolve_backends(args.backends) if args.backends else list(runtime_names())
    req = BenchRequest(profile=override(Profile(name="probe"), backends=backends), models=[])
    avail = Runner(req, progress=False).probe()
    for b in backends:
        why = avail.get(b)
        print(f"{b:18s} {'available' if not why else 'unavailable here: ' + why}")
    return 0


def compare_main(argv: list[str]) -> int:
    args = build_compare_parser().parse_args(argv)
    from ..bench.compare import compare_docs, parse_threshold
    from ..bench.report import markdown, terminal
    from ..bench.results import load_results
    from ..utils.io import atomic_write_text

    try:
        threshold = parse_threshold(args.threshold)
    except ValueError as e:
        raise HvitError(f"--threshold: {e}") from None
    if not 0 < args.alpha < 0.5:
        raise HvitError(f"--alpha {args.alpha} must be between 0 and 0.5")
    for p in (args.report, args.plot):
        if p:
            Path(p).parent.mkdir(parents=True, exist_ok=True) if str(Path(p).parent) else None
    if args.plot:
        check_plot_path(Path(args.plot))
    base = load_results(args.baseline)
    cand = load_results(args.candidate)
    cmp = compare_docs(base, cand, threshold=threshold, alpha=args.alpha, allow_env_diff=args.allow_env_diff)
    if args.require_power is not None:
        cmp.require_power(*_power_targets(args.require_power))
    cmp.baseline_name, cmp.candidate_name = args.baseline, args.candidate
    for meta, doc in ((cmp.baseline_meta, base), (cmp.candidate_meta, cand)):
        meta.update(commit=doc.git_commit(), created=doc.created, profile=doc.profile)
    if args.format == "json":
        import json

        print(json.dumps(cmp.to_dict(), indent=2, default=str))
    else:
        print(terminal(cmp, args.format))
    if args.report:
        atomic_write_text(args.report, markdown(cmp))
        print(f"report: {args.report}", file=sys.stderr)
    if args.plot:
        from ..bench.plot import plot_compare

        try:
            plot_compare(base, cand, cmp, args.plot)
            print(f"plot: {args.plot}", file=sys.stderr)
        except OutputError as e:
            print(f"hvit-bench compare: plot not written: {e}", file=sys.stderr)
    return cmp.exit_code(strict=args.strict, require_power=args.require_power is not None)


if __name__ == "__main__":
    sys.exit(main())
