"""``hvit-bench``: batch-1 latency of exported models; ``hvit-bench compare``: CI regression report.

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

FORMATS = ("table", "md", "csv", "json")


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
    from ..bench.profiles import VARIANT_NAMES

    ap.add_argument("--variants", nargs="+", metavar="VARIANT", choices=VARIANT_NAMES,
                    help="forms to time side by side: rewritten (default), original, int8 (the rewritten form "
                         "quantized as hvit-export --precision int8 does it; needs --calibration)")
    ap.add_argument("--calibration", metavar="DIR", help="calibration images for the int8 variant (searched "
                    "recursively; the accuracy gate's held-out images are split off it unless --eval-data)")
    ap.add_argument("--calibration-size", type=int, metavar="N", help="calibration images used by the int8 variant")
    ap.add_argument("--eval-data", metavar="DIR", help="held-out images for the int8 variant's accuracy gate")
    ap.add_argument("--no-rewrite", action="store_true", help="time the model as written (same as --variants original)")
    ap.add_argument("--threads", type=int, metavar="N", help="intra-op threads of every CPU runtime")
    ap.add_argument("--iters", type=int, metavar="N", help="timed runs per entry")
    ap.add_argument("--warmup", type=int, metavar="N", help="warm-up runs before the settle check")
    ap.add_argument("--rounds", type=int, metavar="R", help="interleaved rounds (iters/R runs per entry per round)")
    ap.add_argument("--processes", type=int, metavar="P",
                    help="worker processes per entry, rounds shared among them (captures process-to-process noise)")
    ap.add_argument("--input-size", type=int, metavar="PX", help="square input side (default: the model's own)")
    ap.add_argument("--checkpoint", action="append", metavar="[MODEL=]PATH",
                    help="official weights (timing does not depend on them; accepted for completeness)")
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
    ap.add_argument("--op-profile", action="store_true", help="also list the top operator types by time")
    ap.add_argument("--out", metavar="FILE.json",
                    help="results file, rewritten after every entry (default: results-<date>-<time>.json)")
    ap.add_argument("--format", choices=FORMATS, default="table", help="summary printed at the end")
    ap.add_argument("--plot", metavar="FILE.png", help="latency distributions per model and backend")
    ap.add_argument("--timeout", type=float, metavar="S", help="stop a worker silent for this long")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--list-profiles", action="store_true", help="list the shipped profiles and exit")
    ap.add_argument("--list-backends", action="store_true", help="say which backends can run here and exit")
    return ap


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


# ------------------------------------------------------------------------------------------------ resolving


def resolve_backends(names: list[str]) -> list[str]:
    """--backends values (runtime names or their aliases: ort, ov, cuda, ...) as registered runtime names."""
    from ..runtimes import canonical_runtime

    return list(dict.fromkeys(canonical_runtime(n) for n in names))


def default_models() -> list[str]:
    """The smallest variant (by parameter count) of every registered family."""
    from ..registry import _MODELS, list_families, list_models

    picks = []
    for fam in list_families():
        names = list_models(fam)
        picks.append(min(names, key=lambda n: (_MODELS[n].params or float("inf"), names.index(n))))
    return picks


def resolve_models(names: list[str] | None) -> list[str]:
    from ..registry import canonical_name

    if not names:
        return default_models()
    out = []
    for n in names:
        c = canonical_name(n)  # UnknownModelError with suggestions
        if c not in out:
            out.append(c)
    return out


def parse_checkpoints(items: list[str] | None, models: list[str]) -> dict[str, str]:
    from ..registry import canonical_name

    out: dict[str, str] = {}
    for item in items or []:
        if "=" in item and not Path(item).exists():
            m, path = item.split("=", 1)
            out[canonical_name(m)] = path
        elif len(models) == 1:
            out[models[0]] = item
        else:
            raise HvitError(f"--checkpoint {item}: with several models, write MODEL=PATH")
    for m, path in out.items():
        if not Path(path).is_file():
            raise HvitError(f"--checkpoint for {m}: no such file {path}")
    return out


def check_int8(prof, flags: list[str]):
    """The int8 variant's data, checked before anything runs: a calibration folder when an int8 entry runs on
    onnxruntime/openvino-format runtimes; folders made absolute (the export process may run elsewhere);
    calibration flags without the int8 variant are refused."""
    from ..bench import profiles
    from ..bench.artifacts import NEEDS_CALIBRATION, runtime_format
    from ..quantize.calibration import find_images

    if "int8" not in prof.variants:
        if flags:
            raise HvitError(f"{flags[0]} goes with --variants ... int8")
        return prof
    needs = [b for b in prof.backends if runtime_format(b) in NEEDS_CALIBRATION]
    if needs and not prof.calibration:
        raise HvitError(f"--variants int8 on {', '.join(needs)} needs calibration images: --calibration DIR "
                        "(or the profile's calibration field)")
    fields = {}
    for name, role in (("calibration", "calibration"), ("eval_data", "--eval-data")):
        folder = getattr(prof, name)
        if folder:
            find_images(folder, role)  # a missing or empty folder: one line now, not after the FP32 runs
            fields[name] = str(Path(folder).expanduser().resolve())
    return profiles.override(prof, **fields)


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


def bench_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.cluster:
        from ..cluster._ray import require_ray

        require_ray()  # one line saying how to install it, before any work
    elif args.targets:
        raise HvitError("--targets goes with --cluster ADDRESS")
    from ..bench import profiles

    if args.list_profiles:
        for name in profiles.list_profiles():
            p = profiles.load_profile(name)
            print(f"{name:12s} {' '.join(p.description.split())}")
        return 0
    prof = profiles.load_profile(args.profile)
    variants = ["original"] if args.no_rewrite else args.variants
    if args.no_rewrite and args.variants and args.variants != ["original"]:
        raise HvitError("--no-rewrite and --variants contradict each other; use one")
    backends = resolve_backends(args.backends) if args.backends else None
    processes = args.processes
    if processes is None and args.rounds is not None and args.rounds < prof.processes:
        processes = args.rounds  # fewer rounds than the profile's processes: one process per round
    prof = profiles.override(
        prof, threads=args.threads, iterations=args.iters, rounds=args.rounds, processes=processes, input_size=args.input_size,
        backends=backends, variants=variants, timeout_s=args.timeout, pair_block=args.pair_block,
        calibration=args.calibration, calibration_size=args.calibration_size, eval_data=args.eval_data,
        **{"warmup.min_runs": args.warmup, "op_profile.enabled": True if args.op_profile else None})
    prof = check_int8(prof, [f for f, v in (("--calibration", args.calibration), ("--calibration-size",
                                             args.calibration_size), ("--eval-data", args.eval_data)) if v is not None])
    if args.warmup is not None and prof.warmup.max_runs < prof.warmup.min_runs:
        prof = profiles.override(prof, **{"warmup.max_runs": prof.warmup.min_runs})
    if args.list_backends:
        from ..runtimes import runtime_names

        return list_backends(prof.backends if args.backends else list(runtime_names()))
    from ..bench import plugins

    plugin_list = plugins.normalise(args.plugin or [])
    plugins.load(plugin_list)
    models = resolve_models(args.models or prof.models)
    checkpoints = parse_checkpoints(args.checkpoint, models)
    out = Path(args.out) if args.out else Path(f"results-{time.strftime('%Y%m%d-%H%M%S')}.json")
    check_out_path(out)
    if args.cluster:  # the same run on each target node of a Ray cluster (hvit_deploy/cluster/bench.py)
        from ..cluster import bench as cluster_bench

        if args.plot:
            check_plot_path(Path(args.plot))
        return cluster_bench.run(args, argv, build_parser(), out, plugin_list)
    against = against_out = None
    if args.against:
        against = Path(args.against).resolve()
        if not (against / "hvit_deploy" / "bench" / "worker.py").is_file():
            raise HvitError(f"--against {args.against}: not the root of an hvit-deploy checkout with hvit-bench "
                            "(no hvit_deploy/bench/worker.py there)")
        if against == Path(__file__).resolve().parents[2]:
            raise HvitError(f"--against {args.against} is this checkout; give another one")
        if prof.rounds < 2:
            raise HvitError("--against times the two checkouts in interleaved rounds: use --rounds 2 or more")
        against_out = Path(args.against_out) if args.against_out else out.with_name(f"{out.stem}-base{out.suffix}")
        check_out_path(against_out)
    elif args.against_out:
        raise HvitError("--against-out needs --against")
    if args.plot:
        check_plot_path(Path(args.plot))

    from ..bench.results import exit_code, format_table
    from ..bench.runner import Plan, Runner

    command = "hvit-bench " + " ".join(shlex.quote(a) for a in argv)
    plan = Plan(models=models, backends=list(prof.backends), variants=list(prof.variants), profile=prof,
                checkpoints=checkpoints, out=out, command=command, plugins=plugin_list, against=against,
                against_out=against_out)
    print(f"hvit-bench: profile {prof.name}: {len(models)} model(s) × {len(prof.backends)} backend(s) × "
          f"{len(prof.variants)} variant(s), {prof.iterations} runs in {prof.rounds} round(s), "
          f"{prof.threads} thread(s) → {out}", file=sys.stderr)
    runner = Runner(plan, progress=not args.no_progress)
    results = runner.run()
    doc = results.doc
    print(format_table(doc, args.format))
    if against is not None:
        from ..bench.compare import compare_docs
        from ..bench.report import terminal

        base_doc = runner.sides[1].results.doc
        if args.format in ("table", "md"):
            print(f"\n--against {against} (results: {against_out}):")
            print(format_table(base_doc, args.format))
        cmp = compare_docs(base_doc, doc)
        print(f"\nthis checkout vs {against}, side by side: " + terminal(cmp), file=sys.stderr)
        print(f"verdict: hvit-bench compare {against_out} {out}", file=sys.stderr)
    if args.plot:
        try:
            from ..bench.plot import plot_results

            print(f"plot: {plot_results(doc, args.plot)}", file=sys.stderr)
        except OutputError as e:
            print(f"hvit-bench: plot not written: {e}", file=sys.stderr)
    print(f"results: {out}", file=sys.stderr)
    code = max(exit_code(doc), exit_code(runner.sides[1].results.doc) if against is not None else 0)
    if code == 1:
        failed = [f"{e['model']}/{e['backend']}/{e.get('variant')}" for e in doc["results"]
                  if e.get("status") not in ("ok", "skipped")]
        print(f"hvit-bench: {len(failed)} entr{'y' if len(failed) == 1 else 'ies'} failed: {', '.join(failed)}",
              file=sys.stderr)
    return code


def list_backends(backends: list[str]) -> int:
    from ..bench.runner import Runner, Plan
    from ..bench.profiles import Profile

    plan = Plan(models=[], backends=backends, variants=["rewritten"], profile=Profile(name="probe"))
    r = Runner(plan, progress=False)
    avail = r.probe()
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
        meta.update(commit=((doc.get("environment") or {}).get("git") or {}).get("commit"),
                    created=doc.get("created"), profile=doc.get("profile"))
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
