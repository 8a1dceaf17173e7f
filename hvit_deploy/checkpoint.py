"""Loading official checkpoints safely, by their own key names.

The release formats differ by family (see ``docs/models.md`` "Checkpoint loading (all families)"):

* a training file ``{'model': ..., 'optimizer': ..., 'config'/'args': ...}`` (SMT, Twins, Swin-ACmix),
* ``{'state_dict': ...}`` saved from DataParallel/DDP with a ``module.`` prefix (ResNet-ACmix, timm-style),
* ``{'state_dict_ema': ...}`` from timm's ``--model-ema`` (EfficientMod),
* a bare state dict (CrossViT releases).

Loading never runs pickled code unless the caller opts in: ``torch.load(weights_only=True)`` with a small
allowlist for the argparse/config objects that training scripts save next to the weights.
"""
from __future__ import annotations

import argparse
import collections
import os
import pickle
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

from .errors import CheckpointError

CONTAINER_KEYS = ("model", "state_dict", "model_state", "module", "net")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema")
PREFIXES = ("module.", "_orig_mod.", "model.")


class _ConfigStub:
    """Stands in for a yacs ``CfgNode`` when unpickling with ``weights_only=True``: the unpickler creates it
    with ``__new__``, which hands back a plain ``OrderedDict`` (the only mapping types the weights-only unpickler
    fills), so the config's data is kept and no code of yacs runs."""

    def __new__(cls, *args, **kwargs):
        return collections.OrderedDict()


def _safe_globals() -> list[Any]:
    """Objects that training scripts save beside the weights and that rebuild without running their code:
    argparse namespaces, yacs configs (read as plain dicts), numpy scalars such as ``max_accuracy`` (under
    numpy 2 also by their numpy 1.x name)."""
    allowed: list[Any] = [argparse.Namespace, collections.OrderedDict, (_ConfigStub, "yacs.config.CfgNode")]
    try:
        import numpy as np

        core = getattr(np, "_core", None) or getattr(np, "core")
        scalar = core.multiarray.scalar
        # files written under numpy 1.x (most official releases) name the scalar numpy.core.multiarray.scalar
        allowed += [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
        dtypes = getattr(np, "dtypes", None)
        if dtypes is not None:
            allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    except Exception:  # pragma: no cover - numpy is a dependency
        pass
    return allowed


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> Any:
    """Read a checkpoint file. ``trust=True`` allows arbitrary pickled objects (runs their code)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise CheckpointError(f"checkpoint is a directory, not a file: {p}")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover
            raise CheckpointError("reading .safetensors needs the safetensors package") from e
        try:
            return load_file(str(p))
        except Exception as e:
            raise CheckpointError(f"cannot read {p.name} as safetensors: {_short(e)}") from None
    if trust:
        try:
            return torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"cannot read checkpoint {p.name}: {_short(e)}") from None
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = _blocked_globals(p)
        if blocked:
            raise CheckpointError(
                f"refusing to unpickle {p.name}: it holds objects outside the safe list ({', '.join(blocked)}); "
                f"re-save only the state dict, or pass --trust-checkpoint (trust_checkpoint=True) if you trust "
                f"the file, which runs its pickled code") from None
        raise CheckpointError(f"cannot read checkpoint {p.name} (corrupt or not a PyTorch file): "
                              f"{_unpickler_reason(e)}") from None
    except Exception as e:  # random bytes can surface as any error of the unpickler (KeyError, TypeError...)
        raise CheckpointError(f"cannot read checkpoint {p.name} (corrupt or not a PyTorch file): "
                              f"{type(e).__name__}: {_short(e)}") from None


def _unpickler_reason(e: BaseException) -> str:
    """torch's weights-only errors are paragraphs; keep the line that says what went wrong."""
    text = str(e)
    marker = "WeightsUnpickler error:"
    if marker in text:
        tail = text.split(marker, 1)[1].strip().splitlines()
        return _short(Exception(tail[0] if tail else text))
    return _short(Exception(text.splitlines()[0] if text else type(e).__name__))


def _blocked_globals(p: Path) -> list[str]:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(p))
    except Exception:
        return []
    safe = {"yacs.config.CfgNode", "argparse.Namespace", "collections.OrderedDict", "numpy.dtype"}
    # torch returns a set: sorted, the same file gives the same message (and the same five names) every run
    return sorted(n for n in names if n not in safe and not n.startswith(("numpy._core.multiarray.scalar",
                                                                          "numpy.core.multiarray.scalar",
                                                                          "numpy.dtypes.")))[:5]


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(e).__name__


def extract_state_dict(obj: Any, *, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """Unwrap the release container and return a flat ``{key: tensor}`` dict."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    order = (EMA_KEYS + CONTAINER_KEYS) if use_ema else (CONTAINER_KEYS + EMA_KEYS)
    for _ in range(3):  # containers can nest, e.g. {'model': {'state_dict': ...}}
        if _is_state_dict(obj):
            break
        inner = next((obj[k] for k in order if isinstance(obj.get(k), dict) and obj[k]), None)
        if inner is None:
            break
        obj = inner
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(list(map(str, obj))[:6])
        raise CheckpointError(f"no tensors found in the checkpoint (top-level keys: {keys})")
    return dict(_strip_prefixes(tensors))


def _is_state_dict(d: dict) -> bool:
    values = list(d.values())
    return bool(values) and sum(isinstance(v, torch.Tensor) for v in values) >= max(1, len(values) // 2)


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_state_dict_into(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    strict: bool = True,
    ignore_keys: Iterable[str] = (),
    source: str = "checkpoint",
) -> tuple[list[str], list[str]]:
    """Load with a clear, one-line account of missing, unexpected and mis-shaped keys."""
    ignore = tuple(ignore_keys) + ("num_batches_tracked",)

    def ignorable(key: str) -> bool:
        return any(key == s or key.endswith("." + s) or key.endswith(s) for s in ignore)

    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not ignorable(k)]
    unexpected = [k for k in state_dict if k not in own and not ignorable(k)]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if mis_shaped:
        raise CheckpointError(
            f"{source} does not fit this model: {len(mis_shaped)} tensors differ in shape, e.g. "
            + "; ".join(mis_shaped[:3]))
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:4])}"
                         f"{', ...' if len(unexpected) > 4 else ''})")
        raise CheckpointError(f"{source} does not match the model: " + " and ".join(parts)
                              + "; is it the right variant? (strict=False loads what matches)")
    filtered = {k: v for k, v in state_dict.items() if k in own}
    with torch.no_grad():
        model.load_state_dict(filtered, strict=False)
    return missing, unexpected


def read_state_dict(path: str | os.PathLike, *, trust: bool = False, use_ema: bool = False,
                    remap=None) -> dict[str, torch.Tensor]:
    """The checkpoint's flat state dict, unwrapped and renamed (``remap``) to the model's key names."""
    sd = extract_state_dict(read_checkpoint(path, trust=trust), use_ema=use_ema)
    return remap(sd) if remap is not None else sd


def head_classes(state_dict: dict[str, torch.Tensor], head_keys: Iterable[str]) -> int | None:
    """The class count of the first classifier head found in ``state_dict`` (``<head>.weight`` is
    (classes, features)); ``None`` when the checkpoint has no head (a backbone or a features-only file)."""
    for key in head_keys:
        w = state_dict.get(f"{key}.weight")
        if isinstance(w, torch.Tensor) and w.ndim >= 1:
            return int(w.shape[0])
    return None


def drop_head(state_dict: dict[str, torch.Tensor], head_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """``state_dict`` without the classifier head's tensors (for a model built with ``num_classes=0``)."""
    prefixes = tuple(f"{k}." for k in head_keys)
    return {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    strict: bool = True,
    trust: bool = False,
    use_ema: bool = False,
    remap=None,
    ignore_keys: Iterable[str] = (),
) -> tuple[list[str], list[str]]:
    obj = read_checkpoint(path, trust=trust)
    sd = extract_state_dict(obj, use_ema=use_ema)
    if remap is not None:
        sd = remap(sd)
    return load_state_dict_into(model, sd, strict=strict, ignore_keys=ignore_keys, source=Path(path).name)
