"""Calibration and held-out image sets: found recursively, chosen deterministically, hashed for the manifest.

Selection is by content, not by name: files are ordered by their sha256, so the same images give the same sets
whatever they are called or however the file system lists them. Without ``--eval-data`` the held-out images are
the last ``holdout`` of that order and calibration takes from the rest, so the two never overlap; with it, any
image whose content is also in the calibration set is refused.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import HvitError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class CalibrationError(HvitError):
    """Calibration or held-out images that cannot be used."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_images(root: str | Path, what: str = "calibration") -> list[Path]:
    """Image files under ``root`` (recursively), in a fixed order; a missing or empty folder is refused."""
    p = Path(root)
    if not p.exists():
        raise CalibrationError(f"{what} folder not found: {p}")
    if not p.is_dir():
        raise CalibrationError(f"{what} path is not a folder: {p}")
    files = sorted((f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda f: f.relative_to(p).as_posix())
    if not files:
        raise CalibrationError(f"{what} folder {p} has no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    return files


@dataclass
class ImageSet:
    """Images chosen for one role, with their content hashes and (ImageFolder layout) labels."""

    root: Path
    role: str
    paths: list[Path]
    hashes: list[str]
    labels: list[int] | None = None
    classes: list[str] | None = None
    skipped: list[str] = field(default_factory=list)
    arrays: np.ndarray | None = None          # (N, 3, H, W) after the model's preprocessing

    @property
    def sha256(self) -> str:
        """sha256 over the sorted file hashes: the same images give the same digest, in any order or names."""
        return hashlib.sha256("\n".join(sorted(self.hashes)).encode()).hexdigest()

    def describe(self) -> dict:
        d = {"folder": str(self.root), "size": len(self.paths), "sha256": self.sha256, "skipped": len(self.skipped)}
        if self.classes is not None:
            d["classes"] = len(self.classes)
        return d


def _labels(root: Path, files: list[Path]) -> tuple[list[int] | None, list[str] | None]:
    """ImageFolder layout: every image one level below a class folder; class index = sorted folder names."""
    parts = [f.relative_to(root).parts for f in files]
    if not parts or any(len(p) != 2 for p in parts):
        return None, None
    classes = sorted({p[0] for p in parts})
    if len(classes) < 2:
        return None, None
    index = {c: i for i, c in enumerate(classes)}
    return [index[p[0]] for p in parts], classes


def _read(root: Path, role: str, files: list[Path], hashes: list[str], want: int | None, preprocess,
          warn: Callable[[str], None], label_of: dict | None = None, classes: list[str] | None = None) -> ImageSet:
    label_of = label_of or {}
    chosen, chosen_h, arrays, skipped = [], [], [], []
    for f, h in zip(files, hashes):
        if want is not None and len(chosen) >= want:
            break
        if preprocess is not None:
            from ..preprocess import ImageReadError

            try:
                arrays.append(preprocess.load(f))
            except ImageReadError as e:
                skipped.append(str(e))
                continue
        chosen.append(f)
        chosen_h.append(h)
    if skipped:
        warn(f"skipped {len(skipped)} unreadable image(s) in {root} (first: {skipped[0]})")
    if not chosen:
        raise CalibrationError(f"none of the {len(files)} {role} image(s) in {root} could be read "
                               f"(first error: {skipped[0] if skipped else 'none'})")
    if want is not None and len(chosen) < want:
        warn(f"{role}: asked for {want} images but {root} has {len(chosen)} usable; using {len(chosen)}")
    return ImageSet(root=root, role=role, paths=chosen, hashes=chosen_h,
                    labels=[label_of[f] for f in chosen] if label_of else None, classes=classes, skipped=skipped,
                    arrays=np.concatenate(arrays, axis=0) if arrays else None)


def _by_content(files: list[Path]) -> tuple[list[Path], list[str]]:
    hashed = []
    for f in files:
        try:
            hashed.append((_sha256(f), f))
        except OSError as e:
            raise CalibrationError(f"cannot read {f}: {e.strerror or e}") from None
    hashed.sort(key=lambda t: (t[0], str(t[1])))
    return [f for _, f in hashed], [h for h, _ in hashed]


def split_sets(calibration: str | Path, *, size: int = 300, eval_data: str | Path | None = None,
               holdout: int = 50, preprocess=None, warn: Callable[[str], None] = lambda m: None,
               need_eval: bool = True) -> tuple[ImageSet, ImageSet | None]:
    """The calibration set and the held-out set for the gate (``None`` when ``need_eval`` is false)."""
    root = Path(calibration)
    files, hashes = _by_content(find_images(root, "calibration"))
    held: ImageSet | None = None
    if need_eval and eval_data is not None:
        eroot = Path(eval_data)
        efiles = find_images(eroot, "--eval-data")
        ef_sorted, eh_sorted = _by_content(efiles)
        overlap = set(eh_sorted) & set(hashes)
        if overlap:
            raise CalibrationError(f"{len(overlap)} image(s) of --eval-data {eroot} are also in the calibration "
                                   f"folder {root} (same content); held-out images must be unseen")
        keep = sorted(efiles, key=lambda f: f.relative_to(eroot).as_posix())  # labelled order = listing order
        hmap = dict(zip(ef_sorted, eh_sorted))
        labels, classes = _labels(eroot, keep)
        held = _read(eroot, "held-out", keep, [hmap[f] for f in keep], None, preprocess, warn,
                     dict(zip(keep, labels)) if labels else None, classes)
    elif need_eval:
        if len(files) < 2:
            raise CalibrationError(f"calibration folder {root} has {len(files)} image; splitting off held-out "
                                   "images for the accuracy gate needs at least 2 (or pass --eval-data DIR)")
        labels, classes = _labels(root, files)
        label_of = dict(zip(files, labels)) if labels else None
        n_hold = min(holdout, len(files) // 2)
        hold_files, hold_hashes = files[-n_hold:], hashes[-n_hold:]
        files, hashes = files[:-n_hold], hashes[:-n_hold]
        order = sorted(range(n_hold), key=lambda i: hold_files[i].relative_to(root).as_posix())
        held = _read(root, "held-out", [hold_files[i] for i in order], [hold_hashes[i] for i in order], None,
                     preprocess, warn, label_of, classes)
    calib = _read(root, "calibration", files, hashes, size, preprocess, warn)
    return calib, held



def held_out_set(*, eval_data: str | Path | None = None, calibration: str | Path | None = None,
                 holdout: int = 50, preprocess=None, warn: Callable[[str], None] = lambda m: None) -> ImageSet:
    """The images a compute precision (bf16) is gated on: the held-out images INT8's gate would use (``eval_data``,
    else the held-out split of ``calibration``), else, with neither, the photos shipped in ``hvit_deploy/assets``."""
    if calibration is not None:
        held = split_sets(calibration, size=1, eval_data=eval_data, holdout=holdout, preprocess=None, warn=warn)[1]
        root, files, hashes, labels, classes = held.root, held.paths, held.hashes, held.labels, held.classes
    else:
        from ..resources import asset

        root = Path(eval_data) if eval_data is not None else asset("chelsea.png").parent
        files = find_images(root, "--eval-data" if eval_data is not None else "assets")
        by_hash = dict(zip(*_by_content(files)))
        hashes = [by_hash[f] for f in files]
        labels, classes = _labels(root, files)
    label_of = dict(zip(files, labels)) if labels else None
    return _read(root, "held-out", files, hashes, None, preprocess, warn, label_of, classes)
