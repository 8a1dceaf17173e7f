"""Worker processes of ``hvit-bench``: how one is started (environment, thread variables, which checkout's
package it imports) and the JSON-lines channel to it, where every wait has a timeout and notices a dead child.

The coordinator (:mod:`.runner`) decides what runs where; this module only starts, talks to and stops workers.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ..resources import package_parent
from . import messages as m

WORKER_MODULE = "hvit_deploy.bench.worker"
PKG_ROOT = package_parent()  # the directory holding this hvit_deploy package
QUIT_GRACE_S = 5.0
NOTE_PREFIX = b"hvit-export: "  # the export's progress lines (quantize/stage.py say), relayed by hvit-bench


class WorkerError(Exception):
    """A worker that crashed, stalled or answered with an error."""


# ------------------------------------------------------------------------------------------------- processes


def worker_env(threads: int, plugins: list[str] | None = None, root: str | Path | None = None) -> dict:
    """The environment of a worker: thread variables, the plugin list, and ``root`` (the checkout whose
    hvit_deploy it imports; default this one) first on PYTHONPATH."""
    env = dict(os.environ)
    if env.get("HVIT_CACHE_DIR"):
        env["HVIT_CACHE_DIR"] = str(Path(env["HVIT_CACHE_DIR"]).expanduser().resolve())
    if plugins:
        from .plugins import ENV_VAR

        env[ENV_VAR] = os.pathsep.join(plugins)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["HVIT_DEFER_FAMILIES"] = "1"  # the model families, timm and torch load on first use: 0.4 s to start, not 3
    # the worker must import the same hvit_deploy as this process, wherever it was started from
    pkg_root = str(Path(root).resolve() if root else PKG_ROOT)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if pkg_root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([pkg_root] + paths)
    return env


class Worker:
    """A worker process with a JSON-lines channel; every wait has a timeout and notices a dead child."""

    def __init__(self, env: dict, label: str, log_dir: Path, cwd: str | Path | None = None):
        self.label = label
        self.log_path = log_dir / f"{label.replace('/', '_')}.{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, "--fd", str(w)],
                stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, pass_fds=(w,), env=env,
                cwd=cwd, start_new_session=True,  # Ctrl-C reaches the coordinator only; it stops workers itself
            )
        finally:
            os.close(w)
        self._r = r
        self._buf = b""
        self._log_pos = 0
        self._log_rest = b""

    def send(self, cmd: m.Command | dict) -> None:
        import json

        wire = cmd if isinstance(cmd, dict) else cmd.to_wire()
        try:
            self.proc.stdin.write((json.dumps(wire) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._death_message()) from None

    def notes(self) -> list[str]:
        """The progress lines the worker has written to its log since the last call (``hvit-export: ...``: the
        export's own, e.g. each INT8 fallback try); whole lines only."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_pos)
                chunk = f.read()
        except OSError:
            return []
        self._log_pos += len(chunk)
        *lines, self._log_rest = (self._log_rest + chunk).split(b"\n")
        return [ln.decode("utf-8", "replace").rstrip() for ln in lines if ln.startswith(NOTE_PREFIX)]

    def _readline(self, timeout: float, on_note: Callable[[str], None] | None = None) -> m.Reply:
        import json

        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"no answer for {timeout:.0f} s (stalled); stopped it")
            ready, _, _ = select.select([self._r], [], [], min(left, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    raise WorkerError(self._death_message())
                if on_note is not None:
                    news = self.notes()
                    for line in news:
                        on_note(line)
                    if news:  # a worker that says what it is doing is not stalled
                        deadline = time.monotonic() + timeout
                continue
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                self.proc.wait(timeout=10)
                raise WorkerError(self._death_message())
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return m.parse_reply(json.loads(line))

    def request(self, cmd: m.Command | dict, timeout: float, on_event: Callable[[m.Reply], None] | None = None,
                final: tuple[str, ...] = (), on_note: Callable[[str], None] | None = None) -> m.Reply:
        """Send ``cmd`` and return the first typed reply (:mod:`.messages`) whose event is in ``final`` (or any
        non-progress event); ``timeout`` is the longest silence allowed between two messages. ``on_note``: each
        progress line the worker logs meanwhile (:meth:`notes`), which also counts as a sign of life."""
        self.send(cmd)
        while True:
            msg = self._readline(timeout, on_note)
            ev = msg.event
            if ev in ("progress", "warming", "loaded"):
                if on_event:
                    on_event(msg)
                continue
            if final and ev not in final and ev not in ("error", "skipped"):
                if on_event:
                    on_event(msg)
                continue
            return msg

    def _death_message(self) -> str:
        rc = self.proc.poll()
        if rc is None:
            return "worker stopped answering"
        if rc < 0:
            try:
                why = signal.Signals(-rc).name
            except ValueError:
                why = f"signal {-rc}"
            head = f"worker crashed ({why})"
        else:
            head = f"worker exited with code {rc}"
        tail = self.log_tail()
        return f"{head}; last output: {tail}" if tail else head

    def log_tail(self, lines: int = 3) -> str:
        try:
            self._log.flush()
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        text = [t.strip() for t in text if t.strip()]
        # runtimes print deprecation warnings by the screenful; quote what is not one of them
        useful = [t for t in text if "warn" not in t.lower() and not t.startswith(("warnings.", "File \"", "^"))]
        keep = (useful or text)[-lines:]
        return " | ".join(keep)[-500:]

    def close(self, grace: float = QUIT_GRACE_S) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(WorkerError, OSError, ValueError):
                self.send({"cmd": "quit"})
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._cleanup()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the worker and anything it started
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._cleanup()

    def _cleanup(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._r)
        self._r = -1
        with contextlib.suppress(OSError):
            self._log.close()
