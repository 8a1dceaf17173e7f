"""``hvit-eval``: top-1/top-5 of eager PyTorch and of exported artifacts on a labelled ImageFolder.

Every image goes through the model's own evaluation transform (:mod:`hvit_deploy.preprocess`), the same one
calibration and validation use. Core ML packages run only on macOS; elsewhere they are listed as skipped.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from ..errors import HvitError
from .common import run_main

PROG = "hvit-eval"


class EvalError(HvitError):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Top-1/top-5 accuracy of eager PyTorch and of exported "
                                "artifacts (.onnx, .xml, .mlpackage) on a labelled ImageFolder.")
    p.add_argument("model", metavar="NAME")
    p.add_argument("artifacts", nargs="*", metavar="ARTIFACT")
    p.add_argument("--data", required=True, metavar="DIR", help="ImageFolder: one sub-folder per class, "
                   "class index = sorted folder names")
    p.add_argument("--checkpoint", metavar="PATH")
    p.add_argument("--trust-checkpoint", action="store_true")
    p.add_argument("--num-classes", type=int, metavar="K")
    p.add_argument("--input-size", type=int, metavar="N")
    p.add_argument("--limit", type=int, metavar="N", help="at most N images (deterministic: the first N listed)")
    p.add_argument("--no-eager", action="store_true", help="skip the PyTorch model")
    p.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _run(args))


def _input_batch(path: Path) -> int:
    from ..formats import format_of_path

    if format_of_path(path) == "onnx":
        import onnx

        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        return int(dims[0].dim_value or 1)
    import openvino as ov

    shape = ov.Core().read_model(str(path)).inputs[0].get_partial_shape()
    return int(shape[0].get_length()) if shape[0].is_static else 1


def _format(path: Path) -> str:
    from ..formats import format_of_path

    return format_of_path(path)


def _runner(path: Path):
    from ..formats import UnknownFormatError, format_of_path, get_format

    try:
        fmt = get_format(format_of_path(path))
    except UnknownFormatError as e:
        raise EvalError(str(e)) from None
    return lambda xs: fmt.run(path, xs)


def _run(args) -> int:
    from tabulate import tabulate
    from tqdm import tqdm

    from ..factory import create_model
    from ..preprocess import preprocessing_for
    from ..quantize.calibration import find_images
    from ..quantize.gate import accuracy
    from ..registry import get_spec

    spec = get_spec(args.model)
    root = Path(args.data)
    files = find_images(root, "--data")
    parts = [f.relative_to(root).parts for f in files]
    if any(len(p) != 2 for p in parts):
        raise EvalError(f"--data {root} is not an ImageFolder: every image must sit in a class sub-folder")
    classes = sorted({p[0] for p in parts})
    labels = [classes.index(p[0]) for p in parts]
    if args.limit:
        files, labels = files[:args.limit], labels[:args.limit]
    artifacts = [Path(a) for a in args.artifacts]
    for a in artifacts:
        if not a.exists():
            raise EvalError(f"artifact not found: {a}")
        _runner(a)  # an unknown suffix: one line, before any work
    pre = preprocessing_for(spec, args.input_size)
    kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
    model = None
    if not args.no_eager:
        model = create_model(spec.name, args.checkpoint, input_size=args.input_size,
                             trust_checkpoint=args.trust_checkpoint, **kwargs)
    arrays = []
    for f in tqdm(files, desc=f"{PROG}: images", unit="img", file=sys.stderr, disable=None):
        arrays.append(pre.load(f))
    x = np.concatenate(arrays)
    rows, results = [], []

    def score(name, logits, note=""):
        r = {"name": name, "images": len(labels), "top1": accuracy(logits, labels, 1),
             "top5": accuracy(logits, labels, 5)}
        if eager is not None and logits is not eager:
            r["top1_agreement"] = float(np.mean(logits.argmax(1) == eager.argmax(1)))
        results.append(r)

    eager = None
    if model is not None:
        from ..quantize.stage import eager_logits

        eager = eager_logits(model, x, 1)
        score("pytorch (eager)", eager)
    for a in artifacts:
        if _format(a) == "coreml" and platform.system() != "Darwin":
            results.append({"name": a.name, "skipped": "Core ML runs only on macOS"})
            continue
        from ..utils.batching import run_in_batches

        b = 1 if _format(a) == "coreml" else _input_batch(a)
        run = _runner(a)
        logits = run_in_batches(lambda xs: [run([c])[0] for c in tqdm(xs, desc=f"{PROG}: {a.name}", unit="batch",
                                                                    file=sys.stderr, disable=None)], x, b)
        score(a.name, logits)
    out = {"model": spec.name, "data": str(root), "classes": len(classes), "preprocessing": pre.as_dict(),
           "results": results}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in results:
            rows.append([r["name"], r.get("images", "-"),
                         f"{r['top1']:.2%}" if "top1" in r else "skipped",
                         f"{r['top5']:.2%}" if "top5" in r else r.get("skipped", ""),
                         f"{r['top1_agreement']:.2%}" if "top1_agreement" in r else "-"])
        print(tabulate(rows, headers=["model / artifact", "images", "top-1", "top-5", "top-1 = eager"],
                       disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
