"""``hvit-eval``: top-1/top-5 of eager PyTorch and of exported artifacts on a labelled ImageFolder.

Every image goes through the model's own evaluation transform (:mod:`hvit_deploy.preprocess`), the same one
calibration and validation use; artifacts run on the runtime export validation uses for their format
(:func:`hvit_deploy.runtimes.run_artifact`). Core ML packages run only on macOS; elsewhere they are listed as
skipped. The rows are typed (:class:`EvalResult`, :class:`EvalReport`); ``--json`` prints the report.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, Field

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


class EvalResult(BaseModel):
    """One row of ``hvit-eval``: the eager model or one artifact."""

    name: str
    images: Optional[int] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    top1_agreement: Optional[float] = None   # with eager PyTorch (artifacts only)
    skipped: Optional[str] = None


class EvalReport(BaseModel):
    """What ``hvit-eval --json`` prints."""

    schema_version: int = 1
    model: str
    data: str
    classes: int
    preprocessing: dict
    results: list[EvalResult] = Field(default_factory=list)

    def to_json(self) -> dict:
        out = self.model_dump(mode="json", exclude={"schema_version"})
        out["results"] = [r.model_dump(mode="json", exclude_none=True) for r in self.results]
        return out




def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _run(args))


def _input_batch(path: Path) -> int:
    """The batch an artifact's input is fixed at (1 when dynamic): inputs are fed in chunks of it."""
    if _format(path) == "onnx":
        import onnx

        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        return int(dims[0].dim_value or 1)
    import openvino as ov

    shape = ov.Core().read_model(str(path)).inputs[0].get_partial_shape()
    return int(shape[0].get_length()) if shape[0].is_static else 1


def _format(path: Path) -> str:
    """The artifact's format, from the format table (each format declares its suffix once)."""
    from ..formats import UnknownFormatError, format_of_path

    try:
        return format_of_path(path)
    except UnknownFormatError as e:
        raise EvalError(str(e)) from None


def _runtime_for(path: Path) -> str:
    """The runtime that runs the artifact: its format's default runtime (export validation uses the same)."""
    from ..formats import get_format

    return get_format(_format(path)).runtime


def _dataset(root: Path, limit: int | None) -> tuple[list[Path], list[int], list[str]]:
    """The images of an ImageFolder, their labels (sorted class folders) and the class names."""
    from ..quantize.calibration import find_images

    files = find_images(root, "--data")
    parts = [f.relative_to(root).parts for f in files]
    if any(len(p) != 2 for p in parts):
        raise EvalError(f"--data {root} is not an ImageFolder: every image must sit in a class sub-folder")
    classes = sorted({p[0] for p in parts})
    labels = [classes.index(p[0]) for p in parts]
    if limit:
        files, labels = files[:limit], labels[:limit]
    return files, labels, classes


def _artifact_logits(path: Path, x: np.ndarray) -> np.ndarray:
    from tqdm import tqdm

    from ..utils.batching import run_in_batches  # pads the last chunk by repeating its last image
    from ..runtimes import open_runtime

    b = 1 if _format(path) == "coreml" else _input_batch(path)
    rt = open_runtime(_runtime_for(path), {"artifact": str(path)})  # one session for every chunk
    for note in rt.notes:  # what the runtime says about running this file here (8-bit INT8 weights without VNNI)
        print(f"{PROG}: {path.name}: note: {note}", file=sys.stderr)
    try:
        return run_in_batches(lambda xs: [rt.predict([c])[0] for c in tqdm(
            xs, desc=f"{PROG}: {path.name}", unit="batch", file=sys.stderr, disable=None)], x, b)
    finally:
        rt.close()


def _score(name: str, logits: np.ndarray, labels: list[int], eager: np.ndarray | None) -> EvalResult:
    from ..quantize.gate import accuracy

    r = EvalResult(name=name, images=len(labels), top1=accuracy(logits, labels, 1), top5=accuracy(logits, labels, 5))
    if eager is not None and logits is not eager:
        r.top1_agreement = float(np.mean(logits.argmax(1) == eager.argmax(1)))
    return r


def _eager(args, spec, x: np.ndarray) -> np.ndarray:
    from ..factory import create_model
    from ..quantize.stage import eager_logits

    kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
    model = create_model(spec.name, args.checkpoint, input_size=args.input_size,
                         trust_checkpoint=args.trust_checkpoint, **kwargs)
    return eager_logits(model, x, 1)


def _print_table(report: EvalReport) -> None:
    from tabulate import tabulate

    rows = [[r.name, r.images if r.images is not None else "-",
             f"{r.top1:.2%}" if r.top1 is not None else "skipped",
             f"{r.top5:.2%}" if r.top5 is not None else (r.skipped or ""),
             f"{r.top1_agreement:.2%}" if r.top1_agreement is not None else "-"] for r in report.results]
    print(tabulate(rows, headers=["model / artifact", "images", "top-1", "top-5", "top-1 = eager"],
                   disable_numparse=True))


def _run(args) -> int:
    from tqdm import tqdm

    from ..preprocess import preprocessing_for
    from ..registry import get_spec

    spec = get_spec(args.model)
    root = Path(args.data)
    files, labels, classes = _dataset(root, args.limit)
    artifacts = [Path(a) for a in args.artifacts]
    for a in artifacts:
        if not a.exists():
            raise EvalError(f"artifact not found: {a}")
        _runtime_for(a)
    pre = preprocessing_for(spec, args.input_size)
    x = np.concatenate([pre.load(f) for f in tqdm(files, desc=f"{PROG}: images", unit="img", file=sys.stderr,
                                                  disable=None)])
    report = EvalReport(model=spec.name, data=str(root), classes=len(classes), preprocessing=pre.as_dict())
    eager = None if args.no_eager else _eager(args, spec, x)
    if eager is not None:
        report.results.append(_score("pytorch (eager)", eager, labels, eager))
    for a in artifacts:
        if _format(a) == "coreml" and platform.system() != "Darwin":
            report.results.append(EvalResult(name=a.name, skipped="Core ML runs only on macOS"))
            continue
        report.results.append(_score(a.name, _artifact_logits(a, x), labels, eager))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
