"""``hvit-export``: build, rewrite, export and validate models; writes artifacts and DIR/manifest.json."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tabulate import tabulate

from ..errors import HvitError
from ..registry import list_families
from .common import run_main

PROG = "hvit-export"


def _size(text: str):
    """``N`` (square) or ``HxW`` (``--features`` at detection resolutions, e.g. 800x1344)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not N or HxW: {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"not N or HxW: {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Export hybrid vision transformers to ONNX, OpenVINO IR and Core ML, each validated against "
                    "eager PyTorch. Writes the artifacts and DIR/manifest.json.",
        epilog="examples:\n  hvit-export smt_t --to onnx\n  hvit-export twins_svt_s --to all --out exports\n"
               "  hvit-export crossvit_9_dagger --to coreml --precision fp16 --checkpoint crossvit_9_dagger_224.pth\n"
               "  hvit-export --family efficientmod --to onnx openvino\n  hvit-export --list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="*", metavar="NAME", help="canonical names or aliases (see --list)")
    p.add_argument("--to", nargs="+", default=["onnx"], metavar="FORMAT",
                   help="onnx, openvino, coreml, executorch, litert or all (several allowed; default onnx; "
                        "executorch and litert need the mobile extra)")
    p.add_argument("--out", default="exports", metavar="DIR", help="output directory (default ./exports)")
    p.add_argument("--family", action="append", default=[], help="export every variant of this family")
    p.add_argument("--checkpoint", metavar="PATH", help="official weights for the one model named")
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="folder of official weights, found by canonical name, alias or release file name")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow arbitrary pickled objects in checkpoints (runs their code: trusted files only)")
    p.add_argument("--use-ema", action="store_true", help="prefer EMA weights when a checkpoint has both")
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="classifier classes (default: the checkpoint's head, else 1000); 0 exports without the head "
                        "(output 'features': the pooled features)")
    p.add_argument("--labels", metavar="FILE",
                   help="class names: one per line, a JSON list or a JSON {index: name} object; must match the "
                        "class count; stored in every artifact (Core ML becomes a classifier)")
    _add_form_and_precision(p)
    _add_input_options(p)
    p.add_argument("--recipe", metavar="FILE", help="use this recipe YAML instead of the family's")
    p.add_argument("--no-validate", action="store_true", help="skip the comparison with PyTorch (not advised)")
    p.add_argument("--plugin", action="append", metavar="FILE.py|MODULE",
                   help="import this first (registers models of your own, as hvit-bench --plugin)")
    p.add_argument("--cluster", metavar="auto|ADDRESS",
                   help="run every export as a task on this Ray cluster (auto: the running one, else a local "
                        "instance); artifacts and manifest come back to --out. Needs hvit-deploy[cluster]; "
                        "see docs/cluster.md")
    p.add_argument("--json", action="store_true", help="print the manifest entries as JSON instead of a table")
    p.add_argument("--list", action="store_true", help="show the zoo: parameters, GMACs, input size")
    p.add_argument("--list-rewrites", action="store_true", help="show the rewrites and where recipes use them")
    return p


def _add_form_and_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-rewrite", action="store_true", help="export the model as written, for comparison")
    p.add_argument("--both", action="store_true", help="export the rewritten model and the model as written")
    p.add_argument("--opset", type=int, help="ONNX opset (default from the recipe, 18)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8", "w4", "bf16", "auto"],
                   help="fp16: OpenVINO/Core ML; int8: static INT8 for onnx/openvino/executorch/litert (needs "
                        "--calibration), 8-bit weights for coreml; w4: 4-bit palettized weights, coreml; bf16: "
                        "openvino, the FP32 IR with INFERENCE_PRECISION_HINT=bf16 in its rt_info, gated on "
                        "held-out images (--eval-data, else the shipped photos); auto: export every precision "
                        "the format's runtime has here (INT8 with --calibration), gate each, time them side by "
                        "side in one run and pick the fastest that passes (manifest: ladders; docs/bench.md) "
                        "(default recipe: fp32)")
    p.add_argument("--calibration", metavar="DIR", help="folder of calibration images (searched recursively)")
    p.add_argument("--calibration-size", type=int, metavar="N",
                   help="calibration images to use (default: recipe, 300, or all there are)")
    p.add_argument("--eval-data", metavar="DIR",
                   help="held-out images for the INT8 (and bf16) accuracy gate (ImageFolder layout gives accuracy "
                        "too); default: a deterministic split of the calibration folder (bf16 without "
                        "--calibration: the shipped photos)")
    p.add_argument("--no-fallback", action="store_true",
                   help="INT8: do not keep the most harmful layers in floating point when the gate fails")
    p.add_argument("--threads", type=int, metavar="N", help="--precision auto: threads of the timed runtimes "
                   "(default: the ladder profile's, 2)")
    p.add_argument("--iters", type=int, metavar="N", help="--precision auto: timed runs per rung (default 300)")
    p.add_argument("--rounds", type=int, metavar="R", help="--precision auto: interleaved rounds (default 6)")


def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=_size, metavar="N|HxW",
                   help="square input side, e.g. 384 for smt_l; HxW (e.g. 800x1344) with --features")
    p.add_argument("--features", action="store_true",
                   help="backbone: export the four stage maps as outputs stage1..stage4 (NCHW, strides 4-32), "
                        "each validated; detection checkpoints (backbone.* keys) load; names get -features")
    p.add_argument("--batch", type=int, metavar="B", help="static batch size (default 1)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="artifacts take any batch (ONNX/OpenVINO: symbolic axis 0; Core ML: 1..64), validated at "
                        "batch 1 and 4; names get -dyn. SMT, Twins and EfficientMod (CrossViT and ACmix rewrites "
                        "bake the batch)")
    p.add_argument("--fold-normalize", action="store_true",
                   help="artifacts take RGB pixel values 0-255 (float, NCHW) and normalise inside; names get -norm")
    p.add_argument("--image-input", action="store_true",
                   help="Core ML: take an RGB image (ct.ImageType) and normalise inside; names get -image "
                        "(other formats: see --fold-normalize)")


def _print_zoo(families: list[str]) -> int:
    from ..zoo import zoo

    rows = []
    for fam in families or list_families():
        for r in zoo(fam):
            rows.append([r.name, r.family, r.paper_name, f"{r.params / 1e6:.2f}M",
                         f"{r.gmacs:.3f}" if r.gmacs is not None else "-", f"{r.input_size[1]}",
                         ", ".join(a for a in r.aliases if a != r.name)[:60]])
    print(tabulate(rows, headers=["model", "family", "paper", "params", "GMACs", "input", "aliases"]))
    return 0


def _print_rewrites() -> int:
    from ..recipes import load_recipe
    from ..rewrites import list_rewrites

    uses: dict[str, list[str]] = {}
    for fam in list_families():
        try:
            recipe = load_recipe(fam)
        except HvitError:
            continue
        for fmt, names in recipe.rewrites.items():
            for n in names:
                uses.setdefault(n, []).append(f"{fam}:{fmt}")
    rows = [[r.name, "exact" if r.exact else "rounding", ", ".join(uses.get(r.name, [])) or "-", r.description]
            for r in list_rewrites()]
    print(tabulate(rows, headers=["rewrite", "equality", "used by", "what it does"], maxcolwidths=[None, None, 40, 60]))
    return 0


def _figure(v, fmt):
    return format(v, fmt) if isinstance(v, (int, float)) else "-"


def _row(entry: dict) -> list:
    val = entry.get("validation") or {}
    if entry["status"] != "ok":
        status = "FAILED"
    elif entry["format"] == "coreml" and not val.get("max_abs"):
        status = "ok (program checked)"
    else:
        status = "ok"
    size = entry.get("size_bytes")
    return [entry["model"], entry["format"], status, entry.get("path") or "-",
            f"{size / 1e6:.1f}" if size else "-", len(entry.get("rewrites") or []),
            entry.get("exporter", "-"), _figure(val.get("max_abs"), ".2e"), _figure(val.get("min_cosine"), ".7f"),
            _figure(val.get("top1", val.get("top1_agreement_within_tie", val.get("top1_agreement"))), ".0%"), _figure(entry.get("seconds"), ".1f")]


def _print_failure(entry: dict) -> None:
    if entry.get("status") != "ok":
        print(f"{PROG}: {entry['model']} {entry.get('format', '')}: FAILED: {entry.get('error')}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _run(args))


def _run(args) -> int:
    if args.list:
        return _print_zoo(args.family)
    if args.list_rewrites:
        return _print_rewrites()
    _check_timing_flags(args)
    plugins = _prepare(args)
    request = request_from_args(args, plugins)
    for note in request.notes():
        print(f"{PROG}: note: {note}", file=sys.stderr)
    from ..utils.io import ensure_writable_dir

    out = ensure_writable_dir(request.out)
    t_all = time.perf_counter()
    if request.precision == "auto":
        return _run_auto(request, out, args, t_all)
    entries = _execute(request, out, cluster=args.cluster)
    _print_entries(entries, out, time.perf_counter() - t_all, as_json=args.json)
    return _exit_code(entries)


def _check_timing_flags(args) -> None:
    given = [f"--{k}" for k in ("threads", "iters", "rounds") if getattr(args, k) is not None]
    if given and args.precision != "auto":
        raise HvitError(f"{given[0]} goes with --precision auto (it sets how the precisions are timed)")
    if args.precision == "auto" and args.cluster:
        raise HvitError("--precision auto times here; leave out --cluster")
    for k in ("threads", "iters", "rounds"):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            raise HvitError(f"--{k} must be at least 1")


def _run_auto(request, out: Path, args, t_all: float) -> int:
    """``--precision auto``: every rung exported into ``out``, timed in one run, the ladders and picks printed;
    exit 0 when every model and format has a pick, 1 otherwise."""
    from ..bench.auto import export_rungs, time_rungs
    from ..export import update_manifest

    entries: list[dict] = []

    def record(entry: dict) -> None:
        entries.append(entry)
        _print_failure(entry)
        update_manifest(out, [entry])

    presets = export_rungs(request, out, _say, record)
    ladders = time_rungs(request, out, presets, threads=args.threads, iterations=args.iters, rounds=args.rounds,
                         say=_say)
    if args.json:
        import json

        print(json.dumps({"entries": entries, "ladders": [lad.to_json() for lad in ladders]}, indent=2, default=str))
    else:
        _print_entries(entries, out, time.perf_counter() - t_all, as_json=False)
        _print_ladders(ladders)
    picked = {(lad.model, lad.format) for lad in ladders if lad.pick}
    return 0 if picked and all((m, f) in picked for m in request.models for f in request.formats) else 1


def _print_ladders(ladders) -> None:
    from ..bench.ladder import format_ladders

    print("\nprecision ladder (--precision auto):")
    print(format_ladders(ladders))
    for lad in ladders:
        print(f"  pick: {lad.model} {lad.format}: {lad.pick or 'none (no rung passed and ran)'}"
              + (f" -> {lad.pick_path}" if lad.pick_path else "") + (f" ({lad.pick_note})" if lad.pick_note else ""))
    for lad in ladders:
        for r in lad.rungs:
            if r.verdict:
                _say(f"{lad.model}: {r.verdict}")


def _prepare(args) -> list[str]:
    """Before the request is read: Ray when ``--cluster`` asks for it (one line saying how to install it, before
    any work), and the ``--plugin`` modules (they register models the request may name)."""
    if args.cluster:
        from ..cluster._ray import require_ray

        require_ray()
    if not args.plugin:
        return []
    from ..bench import plugins

    items = plugins.normalise(args.plugin)
    plugins.load(items)
    return items


def _note_skipped_by_all(values: list[str]) -> None:
    """``--to all``: one note per format left out because its extra is not installed."""
    if any(v.strip().lower() == "all" for value in values for v in value.split(",")):
        from ..formats import skipped_by_all

        for name, why in skipped_by_all().items():
            print(f"{PROG}: note: --to all skips {name}: {why}", file=sys.stderr)


def request_from_args(args, plugins: list[str] | None = None):
    """The :class:`~hvit_deploy.export.request.ExportRequest` of ``hvit-export``'s arguments (checked)."""
    from ..export.request import ExportRequest

    forms = ["rewritten", "original"] if args.both else ["original" if args.no_rewrite else "rewritten"]
    _note_skipped_by_all(args.to)
    return ExportRequest(
        models=args.models, families=args.family, formats=args.to, forms=forms, precision=args.precision,
        input_size=args.input_size, batch=args.batch, dynamic_batch=args.dynamic_batch, checkpoint=args.checkpoint,
        checkpoint_dir=args.checkpoint_dir, trust_checkpoint=args.trust_checkpoint, use_ema=args.use_ema,
        labels=args.labels, num_classes=args.num_classes, fold_normalize=args.fold_normalize,
        image_input=args.image_input, features=args.features, calibration=args.calibration,
        eval_data=args.eval_data, calibration_size=args.calibration_size, fallback=not args.no_fallback,
        recipe=args.recipe, out=args.out, opset=args.opset, validate_artifacts=not args.no_validate,
        plugins=plugins or [])


def _say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def _execute(request, out: Path, *, cluster: str | None) -> list[dict]:
    """Run the request's plan here or on a Ray cluster; the manifest is updated after every artifact (an
    interrupted run keeps what it made). The entries, in plan order."""
    from ..export import update_manifest
    from ..export.request import plan
    from ..export.run import run_local

    plans = plan(request)

    def merge(entry: dict) -> None:
        _print_failure(entry)
        update_manifest(out, [entry])

    if cluster:  # the same jobs, each a Ray task; files and entries come back here
        from ..cluster import export as cluster_export

        return cluster_export.run(request, plans, out, merge, address=cluster)
    entries: list[dict] = []

    def record(entry: dict) -> None:
        entries.append(entry)
        merge(entry)

    run_local(request, plans, out, record, _say)
    return entries


def _print_entries(entries: list[dict], out: Path, seconds: float, *, as_json: bool) -> None:
    if as_json:
        import json

        print(json.dumps(entries, indent=2, default=str))
        return
    rows = [_row(e) for e in entries if "status" in e and "format" in e and e.get("input_shape")]
    rows += [[e["model"], e["format"], "FAILED", "-", "-", "-", "-", "-", "-", "-", "-"]
             for e in entries if not e.get("input_shape")]
    print(tabulate(rows, disable_numparse=True, headers=["model", "format", "status", "artifact", "MB", "rewrites",
                                                         "exporter", "max|diff|", "cosine", "top-1", "s"]))
    for e in entries:
        if e.get("status") != "ok":
            print(f"  {e['model']} {e['format']}: {e.get('error')}")
    failed = _failed(entries)
    print(f"\n{len(entries) - failed} of {len(entries)} exports succeeded in {seconds:.0f} s; "
          f"manifest: {out / 'manifest.json'}")


def _failed(entries: list[dict]) -> int:
    return sum(1 for e in entries if e.get("status") != "ok")


def _exit_code(entries: list[dict]) -> int:
    """0: every export succeeded; 1: some failed (input errors exit 2 before this, see ``run_main``)."""
    return 0 if _failed(entries) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
