"""Export every variant of the chosen families to every format from a checkpoint, and report the worst error.

Model weights cannot be downloaded here, so each model's checkpoint is synthetic: the model's own random weights
(perturbed, so they are not the init values) saved in its family's official release layout — CrossViT as a bare
state dict with the official ``pos_embed.N`` keys, Twins with ``{'model', 'args'}``, SMT and Swin-ACmix with
``{'model', 'config'}`` (a yacs config), ResNet-ACmix as ``{'state_dict'}`` with DDP's ``module.`` prefix,
EfficientMod as timm's ``{'state_dict', 'state_dict_ema'}``. The exporter then loads it by the official key names.

    python benchmarks/export_matrix.py --family twins crossvit --out /tmp/matrix
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from hvit_deploy import create_model, list_models
from hvit_deploy.export import ExportSession, update_manifest
from hvit_deploy.registry import get_spec
from hvit_deploy.testing import save_training_checkpoint


def official_checkpoint(name: str, path: Path) -> Path:
    spec = get_spec(name)
    torch.manual_seed(0)
    model = create_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    sd = model.state_dict()
    fam = spec.family
    if fam == "crossvit":
        sd = {re.sub(r"^(pos_embed|cls_token)_(\d+)$", r"\1.\2", k): v for k, v in sd.items()}
        return save_training_checkpoint(path, sd, container=None)
    if fam == "twins":
        return save_training_checkpoint(path, sd, container="model", with_args=True)
    if fam == "acmix" and "resnet" in name:
        return save_training_checkpoint(path, sd, container="state_dict", prefix="module.")
    if fam == "efficientmod":
        return save_training_checkpoint(path, sd, container="state_dict", extra={"state_dict_ema": sd})
    return save_training_checkpoint(path, sd, container="model", with_yacs_config=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", nargs="+", default=["twins", "crossvit"])
    ap.add_argument("--models", nargs="*", help="only these models")
    ap.add_argument("--to", nargs="+", default=["onnx", "openvino", "coreml"])
    ap.add_argument("--out", default="/tmp/hvit-matrix")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    names = args.models or [n for f in args.family for n in list_models(f)]
    rows, worst, entries = [], {}, []
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        ckpt = official_checkpoint(name, out / "checkpoints" / f"{name}.pth")
        session = ExportSession(name, checkpoint=ckpt)
        for fmt in args.to:
            r = session.export(fmt, out)
            entries.append(r.entry)
            err = r.validation.get("max_abs")
            if r.ok and err is not None and err >= worst.get(fmt, (-1.0, ""))[0]:
                worst[fmt] = (err, name)
            rows.append([name, fmt, "ok" if r.ok else "FAILED", f"{err:.2e}" if err is not None else "-",
                         r.validation.get("min_cosine", "-"), r.seconds, (r.error or "")[:80]])
            print(tabulate([rows[-1]], tablefmt="plain"), flush=True)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    update_manifest(out, entries)
    total = time.perf_counter() - t_all
    print(tabulate(rows, headers=["model", "format", "status", "max|diff|", "min cosine", "s", "error"]))
    failed = sum(1 for r in rows if r[2] != "ok")
    print(f"\n{len(rows) - failed}/{len(rows)} exports validated in {total:.0f} s")
    for fmt, (err, name) in worst.items():
        print(f"worst max|diff| for {fmt}: {err:.2e} ({name})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "worst": worst, "seconds": total}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
