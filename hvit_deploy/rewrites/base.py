"""The rewrite registry: small, named passes over modules that keep the weights and the outputs.

A rewrite is a function ``fn(model, ctx) -> int`` that changes ``model`` in place (``rewrite()`` hands it a
deep copy) and returns how many modules it changed. It is registered with a name, the families it is meant for,
and the export formats it is allowed for (``onnx``, ``openvino``, ``coreml``; default all)::

    @register_rewrite("smt.merge_mhmc", families=("smt",), description="four depthwise convs as one 9x9")
    def merge_mhmc(model, ctx):
        ...

Which rewrites a model gets for a format is written in its family's recipe (``export_recipes/<family>.yaml``),
in the spirit of MMDeploy's backend-switched rewriters but as explicit module passes rather than monkey patches,
so that a rewritten model is an ordinary ``nn.Module`` that can be inspected, tested and exported by any tool.

This module knows nothing of recipes: :func:`rewrite_copy` applies the names it is given. The recipe-driven
:func:`hvit_deploy.rewrite` lives in :mod:`hvit_deploy.rewriting` (recipes check their rewrite names against
this registry, so the dependency runs one way: rewriting → recipes → rewrites). The table is a
:class:`hvit_deploy.utils.registry.Registry` that imports this package's modules by name on first read.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import RewriteError
from ..utils.registry import Registry

FORMATS = ("onnx", "openvino", "coreml")

RewriteFn = Callable[[nn.Module, "RewriteContext"], int]


@dataclass(frozen=True)
class Rewrite:
    name: str
    fn: RewriteFn
    families: tuple[str, ...]     # empty: any family
    formats: tuple[str, ...]      # the export formats it is allowed for
    description: str
    exact: bool                   # True when outputs are bit-identical, False when equal up to float rounding
    # how the pass treats the batch size: "any" (never reads it), "dynamic" (reads it from the probe but writes
    # ctx.batch_dim(), so -1 under a dynamic-batch export), "static" (bakes it in: refused for dynamic batch)
    batch: str = "any"


# every module of this package but this one registers its passes on import; found by name on first read
REWRITES: Registry[Rewrite] = Registry("rewrite", discover="hvit_deploy.rewrites", error=RewriteError,
                                       hint="run `hvit-export --list-rewrites` to see them")


def register_rewrite(
    name: str,
    *,
    families: tuple[str, ...] = (),
    formats: tuple[str, ...] = FORMATS,
    description: str | None = None,
    exact: bool = False,
    batch: str = "any",
):
    """``formats``: the export formats the pass is allowed for. ``batch``: how the pass treats the batch size
    (see :class:`Rewrite`)."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"rewrite {name!r}: {unknown_format(bad[0])}")
    if batch not in ("any", "dynamic", "static"):
        raise ValueError(f"rewrite {name!r}: batch must be any, dynamic or static, not {batch!r}")

    def decorator(fn: RewriteFn) -> RewriteFn:
        doc = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        REWRITES.add(name, Rewrite(name, fn, tuple(families), tuple(formats), doc, exact, batch))
        return fn

    return decorator


def unknown_format(fmt) -> str:
    return f"unknown format {fmt!r}: rewrites are for an export format, one of {', '.join(FORMATS)}"


def get_rewrite(name: str) -> Rewrite:
    """The pass named ``name``; unknown: a one-line :class:`RewriteError` with close names."""
    return REWRITES.get(name)


def list_rewrites(family: str | None = None) -> list[Rewrite]:
    return [r for r in REWRITES.values() if family is None or not r.families or family in r.families]


@dataclass
class ProbeRecord:
    """What a module received in one forward pass at the export resolution."""

    args: tuple[Any, ...]           # tensors are replaced by their shapes (tuples), other values kept
    kwargs: dict[str, Any]
    output_shape: Any


@dataclass
class RewriteContext:
    format: str                                     # the export format the rewritten model is for
    input_shape: tuple[int, int, int, int]          # (B, C, H, W) the export will use
    model_name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # the export takes any batch: passes still probe at input_shape[0] but write batch_dim() (-1) into reshapes
    dynamic_batch: bool = False
    _probe_cache: dict[int, dict[str, ProbeRecord]] = field(default_factory=dict, repr=False)

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    def batch_dim(self, probed: int | None = None) -> int:
        """The batch size a pass writes into a reshape: -1 for a dynamic-batch export, else the static batch.
        A pass using it must only put it where -1 can stand (one inferred dimension per reshape, not in products
        or ``expand`` sizes), and register with ``batch="dynamic"``."""
        return -1 if self.dynamic_batch else int(self.batch if probed is None else probed)

    def probe(self, model: nn.Module) -> dict[str, ProbeRecord]:
        """Run one forward pass at the export shape and record each module's inputs (static shapes)."""
        key = id(model)
        if key not in self._probe_cache:
            self._probe_cache[key] = probe_shapes(model, self.input_shape)
        return self._probe_cache[key]

    def invalidate(self) -> None:
        self._probe_cache.clear()


def _describe(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return tuple(v.shape)
    if isinstance(v, (list, tuple)):
        return type(v)(_describe(x) for x in v)
    if isinstance(v, dict):
        return {k: _describe(x) for k, x in v.items()}
    return v


def probe_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, ProbeRecord]:
    records: dict[str, ProbeRecord] = {}
    handles = []
    for name, module in model.named_modules():
        def hook(mod, args, kwargs, output, _name=name):
            if _name not in records:
                records[_name] = ProbeRecord(_describe(args), _describe(kwargs), _describe(output))
        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        with torch.no_grad():
            model(torch.zeros(input_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return records


@dataclass(frozen=True)
class AppliedRewrite:
    name: str
    modules_changed: int


def apply_rewrites(model: nn.Module, names: list[str], ctx: RewriteContext) -> list[AppliedRewrite]:
    """Apply the named rewrites in order, in place. A rewrite not allowed for ``ctx.format`` is an error."""
    done = []
    for name in names:
        rw = get_rewrite(name)
        if ctx.format not in rw.formats:
            raise RewriteError(f"rewrite {name!r} is not meant for {ctx.format} (only {', '.join(rw.formats)})")
        if ctx.dynamic_batch and rw.batch == "static":
            raise RewriteError(f"rewrite {name!r} bakes the batch size into the graph, so "
                               f"{ctx.model_name or 'this model'} cannot be exported with a dynamic batch; "
                               f"export a static --batch B instead (or --no-rewrite)")
        try:
            count = int(rw.fn(model, ctx) or 0)
        except RewriteError:
            raise
        except Exception as e:
            raise RewriteError(f"rewrite {name!r} failed: {type(e).__name__}: {e}") from e
        ctx.invalidate()
        done.append(AppliedRewrite(name, count))
    return done


# --------------------------------------------------------------------------------------------- helpers for passes

def replace_module(root: nn.Module, qualified_name: str, new: nn.Module) -> None:
    parent_name, _, child = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def swap_class(module: nn.Module, new_cls: type) -> None:
    """Give ``module`` a new forward by changing its class to a subclass; parameters and keys stay the same."""
    if not issubclass(new_cls, type(module)) and not issubclass(new_cls, nn.Module):
        raise TypeError(f"{new_cls.__name__} cannot stand in for {type(module).__name__}")
    module.__class__ = new_cls


def rewrite_copy(model: nn.Module, fmt: str, names: list[str], *, input_size=None, batch_size: int = 1,
                 dynamic_batch: bool = False) -> nn.Module:
    """A deep copy of ``model`` with the named rewrites applied for export format ``fmt``; static shapes for
    ``input_size`` (default: the model's own) and ``batch_size``. The original is left untouched. With
    ``dynamic_batch`` the passes probe at ``batch_size`` but leave the batch as -1 in their reshapes, and a pass
    that cannot (registered ``batch="static"``) is refused with a :class:`RewriteError`."""
    if fmt not in FORMATS:
        raise RewriteError(unknown_format(fmt))
    size = input_size or getattr(model, "hvit_input_size", None)
    if size is None:
        raise RewriteError("the model carries no input size; pass input_size=(C, H, W)")
    if isinstance(size, int):
        size = (3, size, size)
    new = copy.deepcopy(model)
    new.eval()
    ctx = RewriteContext(format=fmt, input_shape=(int(batch_size),) + tuple(int(s) for s in size),
                         model_name=getattr(model, "hvit_name", None), dynamic_batch=bool(dynamic_batch))
    applied = apply_rewrites(new, list(names), ctx)
    new.hvit_rewrites = [a.name for a in applied]
    new.hvit_rewrite_counts = {a.name: a.modules_changed for a in applied}
    new.hvit_format = fmt
    new.hvit_input_size = tuple(size)
    new.hvit_batch_size = int(batch_size)
    new.hvit_dynamic_batch = bool(dynamic_batch)
    return new
