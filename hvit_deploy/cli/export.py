"""``hvit-export``: build, rewrite, export and validate models; writes artifacts and DIR/manifest.json."""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from tabulate import tabulate

from ..errors import HvitError, HvitNotice
from ..registry import canonical_name, get_spec, list_families, list_models
from .common import debug_enabled, run_main

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
    p.add_argument("--no-rewrite", action="store_true", help="export the model as written, for comparison")
    p.add_argument("--both", action="store_true", help="export the rewritten model and the model as written")
    p.add_argument("--opset", type=int, help="ONNX opset (default from the recipe, 18)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8", "w4"],
                   help="fp16: OpenVINO/Core ML; int8: static INT8 for onnx/openvino (needs --calibration), "
                        "8-bit weights for coreml; w4: 4-bit palettized weights, coreml (default recipe: fp32)")
    p.add_argument("--calibration", metavar="DIR", help="folder of calibration images (searched recursively)")
    p.add_argument("--calibration-size", type=int, metavar="N",
                   help="calibration images to use (default: recipe, 300, or all there are)")
    p.add_argument("--eval-data", metavar="DIR",
                   help="held-out images for the INT8 accuracy gate (ImageFolder layout gives accuracy too); "
                        "default: a deterministic split of the calibration folder")
    p.add_argument("--no-fallback", action="store_true",
                   help="INT8: do not keep the most harmful layers in floating point when the gate fails")
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


def _formats(values: list[str]) -> list[str]:
    from ..export.formats import parse_formats, skipped_by_all

    formats = parse_formats(values)
    if any(v.strip().lower() == "all" for value in values for v in value.split(",")):
        for name, why in skipped_by_all().items():
            print(f"{PROG}: note: --to all skips {name}: {why}", file=sys.stderr)
    return formats


def _find_checkpoint(directory: Path, name: str) -> Path | None:
    spec = get_spec(name)
    stems = [spec.name, *spec.aliases]
    candidates = [directory / spec.weights] if spec.weights else []
    candidates += [directory / f"{s}{ext}" for s in stems for ext in (".pth", ".pt", ".pth.tar", ".safetensors")]
    return next((c for c in candidates if c.is_file()), None)


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
        for backend, names in recipe.rewrites.items():
            for n in names:
                uses.setdefault(n, []).append(f"{fam}:{backend}")
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


def _quantization_args(args, formats: list[str]) -> dict:
    """Check the INT8 flags before anything is built or written; the keyword arguments for ``export``."""
    from ..quantize.calibration import CalibrationError, split_sets
    from ..quantize.export import check_request

    int8 = args.precision in ("int8", "w4")
    if not int8:
        for flag, value in (("--calibration", args.calibration), ("--eval-data", args.eval_data),
                            ("--calibration-size", args.calibration_size)):
            if value is not None:
                raise HvitError(f"{flag} goes with --precision int8")
        return {}
    for fmt in formats:
        check_request(fmt, args.precision, args.calibration)
    if args.calibration_size is not None and args.calibration_size < 1:
        raise CalibrationError("--calibration-size must be at least 1")
    if args.calibration and any(f != "coreml" for f in formats):
        split_sets(args.calibration, eval_data=args.eval_data, preprocess=None)  # missing, empty, overlap
    elif args.eval_data:
        raise HvitError("--eval-data goes with --calibration (Core ML int8 is weight-only and is not run here)")
    return {"calibration": args.calibration, "eval_data": args.eval_data, "calibration_size": args.calibration_size,
            "fallback": not args.no_fallback}


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
    if args.cluster:
        from ..cluster._ray import require_ray

        require_ray()  # one line saying how to install it, before any work
    if args.plugin:
        from ..bench import plugins

        plugins.load(plugins.normalise(args.plugin))
    names = [canonical_name(n) for n in args.models]
    for fam in args.family:
        fam_models = list_models(fam)
        if not fam_models:
            raise HvitError(f"unknown family {fam!r}; families: {', '.join(list_families())}")
        names += fam_models
    names = list(dict.fromkeys(names))
    if not names:
        raise HvitError("name at least one model (or --family F); `hvit-export --list` shows the zoo")
    formats = _formats(args.to)
    if args.checkpoint and len(names) != 1:
        raise HvitError("--checkpoint goes with exactly one model; use --checkpoint-dir for several")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise HvitError(f"checkpoint not found: {args.checkpoint}")
    if args.checkpoint_dir and not Path(args.checkpoint_dir).is_dir():
        raise HvitError(f"checkpoint directory not found: {args.checkpoint_dir}")
    if args.batch is not None and args.batch < 1:
        raise HvitError("--batch must be at least 1")
    if args.dynamic_batch and args.batch not in (None, 1):
        raise HvitError("--dynamic-batch takes any batch size; leave out --batch")
    if args.image_input and (args.dynamic_batch or args.batch not in (None, 1)):
        raise HvitError("--image-input takes one image: leave out --batch and --dynamic-batch")
    if args.image_input and "coreml" not in formats:
        raise HvitError(f"--image-input applies to Core ML only, and --to asks for {', '.join(formats)}; "
                        f"use --fold-normalize for ONNX/OpenVINO pixel input")
    if args.image_input and formats != ["coreml"]:
        others = ", ".join(f for f in formats if f != "coreml")
        note = "" if args.fold_normalize else " (add --fold-normalize for pixel input there)"
        print(f"{PROG}: note: --image-input applies to Core ML only; {others} take a tensor{note}", file=sys.stderr)
    if args.num_classes is not None and args.num_classes < 0:
        raise HvitError(f"--num-classes must be 0 (no head: pooled features) or more, not {args.num_classes}")
    if args.features:
        from ..export.features import check_features

        if args.labels is not None or args.image_input:
            raise HvitError("--features exports the stage maps: --labels and --image-input do not apply")
        for n in names:  # refused before anything is built, one line
            spec = get_spec(n)
            size = args.input_size or spec.input_size[1:]
            check_features(spec, (spec.input_size[0],) + ((size, size) if isinstance(size, int) else tuple(size)))
    if args.labels is not None:
        from ..labels import read_labels

        read_labels(args.labels)  # a missing, empty or malformed file is refused before anything is built
    quant = _quantization_args(args, formats)
    from ..utils.io import ensure_writable_dir

    out = ensure_writable_dir(args.out)
    variants = [True, False] if args.both else [not args.no_rewrite]

    from ..export import ExportSession, update_manifest

    entries: list[dict] = []
    t_all = time.perf_counter()

    def record(entry: dict) -> None:
        entries.append(entry)
        _print_failure(entry)
        update_manifest(out, [entry])  # after every artifact: an interrupted run keeps what it made

    if args.cluster:  # the same exports, each a Ray task; files and entries come back here
        from ..cluster import export as cluster_export

        def merge(entry: dict) -> None:  # as record(), in the order tasks finish
            _print_failure(entry)
            update_manifest(out, [entry])

        entries[:] = cluster_export.run(args, names, formats, variants, quant, out, _find_checkpoint, merge)
        names = []
    for name in names:
        checkpoint = args.checkpoint
        if args.checkpoint_dir:
            checkpoint = _find_checkpoint(Path(args.checkpoint_dir), name)
            if checkpoint is None:
                record({"model": name, "format": ",".join(formats), "status": "failed",
                        "error": f"no checkpoint for {name} in {args.checkpoint_dir}"})
                continue
        print(f"{PROG}: {name}: building{' from ' + str(checkpoint) if checkpoint else ''} ...", file=sys.stderr)
        try:
            with warnings.catch_warnings(record=True) as notices:
                warnings.simplefilter("always", HvitNotice)
                session = ExportSession(name, checkpoint=checkpoint, input_size=args.input_size,
                                        batch_size=args.batch, recipe=args.recipe,
                                        trust_checkpoint=args.trust_checkpoint, use_ema=args.use_ema,
                                        validate=not args.no_validate, num_classes=args.num_classes,
                                        labels=args.labels, dynamic_batch=args.dynamic_batch,
                                        fold_normalize=args.fold_normalize, image_input=args.image_input,
                                        features=args.features)
            for n in notices:
                if issubclass(n.category, HvitNotice):
                    print(f"{PROG}: note: {' '.join(str(n.message).split())}", file=sys.stderr)
                else:
                    warnings.warn_explicit(n.message, n.category, n.filename, n.lineno)
        except HvitError as e:
            if len(names) == 1:
                raise
            record({"model": name, "format": ",".join(formats), "status": "failed", "error": str(e)})
            continue
        for fmt in formats:
            for rewritten in variants:
                label = f"{name} -> {fmt}{'' if rewritten else ' (as written)'}"
                print(f"{PROG}: {label} ...", file=sys.stderr, flush=True)
                try:
                    result = session.export(fmt, out, rewrite=rewritten, opset=args.opset, precision=args.precision,
                                            **(quant if args.precision in ("int8", "w4") else {}))
                    entry = result.entry
                except HvitError:
                    raise
                except Exception as e:  # one model's bug must not sink the others
                    if debug_enabled():
                        raise
                    entry = {"model": name, "format": fmt, "status": "failed", "rewritten": rewritten,
                             "error": f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"}
                record(entry)
    failed = sum(1 for e in entries if e.get("status") != "ok")
    if args.json:
        import json

        print(json.dumps(entries, indent=2, default=str))
    else:
        rows = [_row(e) for e in entries if "status" in e and "format" in e and e.get("input_shape")]
        rows += [[e["model"], e["format"], "FAILED", "-", "-", "-", "-", "-", "-", "-", "-"]
                 for e in entries if not e.get("input_shape")]
        print(tabulate(rows, disable_numparse=True, headers=["model", "format", "status", "artifact", "MB", "rewrites", "exporter",
                                      "max|diff|", "cosine", "top-1", "s"]))
        for e in entries:
            if e.get("status") != "ok":
                print(f"  {e['model']} {e['format']}: {e.get('error')}")
        print(f"\n{len(entries) - failed} of {len(entries)} exports succeeded in {time.perf_counter() - t_all:.0f} s; "
              f"manifest: {out / 'manifest.json'}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
