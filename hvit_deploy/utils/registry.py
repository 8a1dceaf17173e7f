"""One small registry, reused by the model zoo, the rewrites, the export formats and the runtimes.

Each of those tables needs the same four things: register an entry under a canonical name and its aliases
(refusing a name twice), look a name up forgivingly (case, ``-`` vs ``_``), say what close names exist when a
lookup fails, and find its entries lazily by importing every module of one package the first time it is read::

    RUNTIMES = Registry("runtime", discover="hvit_deploy.runtimes", error=UnknownRuntimeError)
    RUNTIMES.add("onnxruntime", OnnxRuntimeCPU, aliases=("ort",))
    RUNTIMES.get("ORT")          # -> OnnxRuntimeCPU
    RUNTIMES.get("onxruntime")   # UnknownRuntimeError: unknown runtime 'onxruntime'; did you mean onnxruntime?

Discovery imports modules by name (``importlib``), so a table never imports the package that fills it: the
import arrows keep pointing from the entries to the table.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


class Registry(Generic[T]):
    """Entries by canonical name, in registration order, with aliases and close-name suggestions.

    ``discover``: a package whose modules (those not starting with ``_``, and none named in ``skip``) are
    imported on first read, each registering its entries. ``error``: the exception class raised for an
    unknown name (one line, with suggestions). ``hint``: what to add when nothing is close.
    """

    def __init__(self, kind: str, *, discover: str | None = None, skip: tuple[str, ...] = (),
                 error: type[Exception] = LookupError, hint: str = "",
                 modules: Callable[[], list[str]] | None = None, suggest_aliases: bool = False):
        self.kind = kind
        self._discover = discover
        self._skip = set(skip) | {"base"}
        self._modules = modules
        self._error = error
        self._hint = hint
        self._suggest_aliases = suggest_aliases  # suggest the close alias itself, not only its canonical name
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = discover is None

    # --- filling ---
    def add(self, name: str, item: T, aliases: tuple[str, ...] | list[str] = ()) -> T:
        if name in self._items or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        for alias in aliases:
            if alias == name:
                continue
            if alias in self._items or self._aliases.get(alias, name) != name:
                raise ValueError(f"alias {alias!r} of {self.kind} {name!r} is already taken")
            self._aliases[alias] = name
        return item

    def load(self) -> None:
        """Import the discovery package's modules once (each registers its entries)."""
        if self._loaded:
            return
        self._loaded = True
        assert self._discover is not None
        if self._modules is not None:
            names = self._modules()
        else:
            pkg = importlib.import_module(self._discover)
            names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__))
        for mod in names:
            if not mod.startswith("_") and mod not in self._skip:
                importlib.import_module(f"{self._discover}.{mod}")

    # --- reading ---
    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` (a name or an alias, any case, ``-`` or ``_``); unknown: ``error``."""
        self.load()
        key = name.strip()
        if key in self._items:
            return key
        if key in self._aliases:
            return self._aliases[key]
        lowered = _norm(key)
        for table in (self._items, self._aliases):
            for candidate in table:
                if _norm(candidate) == lowered:
                    return self._aliases.get(candidate, candidate)
        raise self._error(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        lowered = _norm(name)
        known = list(self._items) + list(self._aliases)
        close = difflib.get_close_matches(lowered, known, n=3, cutoff=0.6)
        if not close:  # a prefix helps for "smt" or "efficientmod"
            close = [n for n in self._items if _norm(n).startswith(lowered)][:3] if lowered else []
        close = list(dict.fromkeys(c if self._suggest_aliases else self._aliases.get(c, c) for c in close))
        if close:
            return f"unknown {self.kind} {name!r}; did you mean {', '.join(close)}?"
        return f"unknown {self.kind} {name!r}" + (f"; {self._hint}" if self._hint else
                                                    f"; choose from {', '.join(self._items)}")

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.canonical(name)
        except self._error:
            return False
        return True

    def names(self) -> list[str]:
        self.load()
        return list(self._items)

    def values(self) -> list[T]:
        self.load()
        return list(self._items.values())

    def items(self) -> list[tuple[str, T]]:
        self.load()
        return list(self._items.items())

    def aliases(self) -> dict[str, str]:
        self.load()
        return dict(self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
