"""Ray, imported only when ``--cluster`` is given: connecting, what is shipped to the workers, and files sent
by value.

What the workers get (a remote node need not share a filesystem with the caller):

* the ``hvit_deploy`` package this process imported, with its recipes and profiles copied inside it (as a wheel
  lays them out), as a Ray ``runtime_env`` ``py_modules`` entry, so every worker runs the caller's code whatever
  (if anything) is installed there. The third-party packages (torch, onnx, openvino, ...) must be installed on
  every node; their versions land in each manifest entry's ``tools`` and each results file's ``environment``.
* every file the command line names (``--plugin`` files, ``--checkpoint``, ``--labels``, ``--recipe``,
  ``--profile FILE``, calibration folders), sent by value through Ray's object store (:func:`ship`) and written
  to a temporary folder on the worker under its own base name (:func:`materialize`).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import HvitError
from ..resources import package_dir
from ..utils.debug import DEBUG_ENV, debug_enabled

INSTALL_HINT = 'pip install "hvit-deploy[cluster]"'
# errors that say a node, worker or object went away (not a bug in the task): retried once, then recorded
RETRY_ON = ("NodeDiedError", "WorkerCrashedError", "ObjectLostError", "OwnerDiedError", "LocalRayletDiedError",
            "ObjectFetchTimedOutError", "RaySystemError")


class ClusterError(HvitError):
    """A cluster that cannot be used: Ray missing, no cluster at the address, no node with a target label."""


def require_ray():
    """The ``ray`` module, or a one-line :class:`ClusterError` (exit 2) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--cluster needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def _is_loopback(address: str | None) -> bool:
    if not address:
        return False
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _loopback_only(ray) -> None:
    """Keep this process on 127.0.0.1. Ray turns a loopback address into the machine's routable IP before it
    connects (and starts a local instance on that IP); on Linux it does not do so when "clusters" are off
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once at import, hence the module attribute too)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    if hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        ray_constants.ENABLE_RAY_CLUSTER = False


def _existing_address() -> str | None:
    """What ``address="auto"`` would connect to (RAY_ADDRESS or the last ``ray start`` on this machine)."""
    try:
        from ray._private import services

        return services.get_ray_address_from_environment("auto", None)
    except Exception:  # noqa: BLE001 - private API; "unknown" means: try to connect and see
        return None


def stage_package(dest: Path) -> Path:
    """A clean copy of this ``hvit_deploy`` (no caches) with ``export_recipes/`` and ``profiles/`` inside it,
    the layout an installed wheel has (see :mod:`hvit_deploy.resources`)."""
    from ..resources import profiles_dir, recipes_dir

    pkg = dest / "hvit_deploy"
    shutil.copytree(package_dir(), pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    for name, src in (("export_recipes", recipes_dir()), ("profiles", profiles_dir())):
        target = pkg / name
        target.mkdir(exist_ok=True)
        for f in src.glob("*.yaml"):
            shutil.copy2(f, target / f.name)
    return pkg


@contextlib.contextmanager
def connected(address: str, *, what: str = "hvit-deploy") -> Iterator[Any]:
    """Connect to the cluster at ``address`` (``auto``: the running one, else a new local instance on
    127.0.0.1), with this package shipped to its workers; disconnect (and stop a local instance) on exit."""
    ray = require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from the caller's machine
    if address == "auto":
        existing = _existing_address()
        if existing is None or _is_loopback(existing):
            _loopback_only(ray)
    elif _is_loopback(address):
        _loopback_only(ray)
    staging = Path(tempfile.mkdtemp(prefix="hvit-cluster-pkg-"))
    env_vars = {k: os.environ[k] for k in (DEBUG_ENV,) if k in os.environ}
    runtime_env = {"py_modules": [str(stage_package(staging))], "env_vars": env_vars}
    debug = debug_enabled()
    kw = dict(runtime_env=runtime_env, log_to_driver=debug, logging_level=logging.INFO if debug else logging.WARNING,
              configure_logging=True)
    try:
        if address == "auto":
            try:
                ray.init(address="auto", **kw)
            except ConnectionError:  # nothing running: a local instance, ours for this command only
                ray.init(include_dashboard=False, **kw)
        else:
            try:
                ray.init(address=address, **kw)
            except (ConnectionError, ValueError) as e:
                raise ClusterError(f"--cluster {address}: cannot connect to a Ray cluster there: "
                                   f"{' '.join(str(e).split())[:300]}") from None
        yield ray
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        shutil.rmtree(staging, ignore_errors=True)


def alive_nodes(ray) -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def node_info() -> dict:
    """Where this task runs (recorded with each manifest entry / results file; differs between runs)."""
    import platform

    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "hostname": platform.node()}


def retry_exceptions(ray) -> list[type]:
    return [getattr(ray.exceptions, n) for n in RETRY_ON if hasattr(ray.exceptions, n)] + [OSError]


def describe_failure(err: BaseException) -> str:
    """One line for a task that did not come back: its own error, or what happened to its worker or node."""
    cause = getattr(err, "cause", None)
    name = type(cause if cause is not None else err).__name__
    text = " ".join(str(cause if cause is not None else err).split())
    if "Traceback" in text:  # a RayTaskError's text: keep the last line (the exception itself)
        text = text.rsplit("  ", 1)[-1]
    kind = type(err).__name__
    if kind in ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OwnerDiedError"):
        return f"the Ray worker or node running it died ({kind}), also on the retry"
    return f"internal error: {name}: {text[:300]}"


# ------------------------------------------------------------------------------------------------ shipping


def ship(ray, path: str | os.PathLike) -> dict:
    """A file or folder sent by value: ``{"name", "kind", "sha256", "ref"}`` (``ref``: the bytes in Ray's
    object store, put once however many tasks use them)."""
    p = Path(path)
    if p.is_dir():
        files = {f.relative_to(p).as_posix(): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}
        h = hashlib.sha256()
        for rel, data in files.items():
            h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        return {"name": p.name, "kind": "dir", "sha256": h.hexdigest(), "ref": ray.put(files), "source": str(path)}
    data = p.read_bytes()
    return {"name": p.name, "kind": "file", "sha256": hashlib.sha256(data).hexdigest(), "ref": ray.put(data),
            "source": str(path)}


def materialize(item: dict, root: Path) -> Path:
    """Write a shipped file or folder under ``root`` (by content, so a worker reusing ``root`` writes it once);
    the path keeps the original base name, which manifests record."""
    import ray

    target = root / item["sha256"][:16] / item["name"]
    if target.exists():
        return target
    payload = ray.get(item["ref"])
    tmp = Path(tempfile.mkdtemp(prefix=".ship-", dir=_mkdir(root)))
    try:
        if item["kind"] == "dir":
            for rel, data in payload.items():
                f = tmp / item["name"] / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data)
            (tmp / item["name"]).mkdir(exist_ok=True)
        else:
            (tmp / item["name"]).write_bytes(payload)
        _mkdir(target.parent)
        with contextlib.suppress(OSError):  # another task of this worker may have won the race
            os.replace(tmp / item["name"], target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def ship_plugins(ray, items: list[str]) -> list[dict | str]:
    """``--plugin`` values: files shipped by value, module names passed on (they must import on the workers)."""
    out: list[dict | str] = []
    for item in items:
        p = Path(item)
        out.append(ship(ray, p) if p.is_file() else item)
    return out


def load_plugins(items: list[dict | str], root: Path) -> list[str]:
    """On a worker: write the shipped plugin files and import them (and the module names); their paths."""
    from ..bench import plugins

    paths = [str(materialize(i, root)) if isinstance(i, dict) else i for i in items]
    plugins.load(paths)
    return paths
