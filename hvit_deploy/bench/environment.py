"""The "environment" record of a results file: machine, OS, versions, commit and thread settings.

Collected without importing the runtimes (versions come from package metadata), so the coordinator stays light;
what only a runtime can tell (threads it actually uses, device names) is read back by each worker and stored
with its entry.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY", "KMP_AFFINITY")

# environment fields that make two results files not comparable when they differ (see compare.py)
HARDWARE_FIELDS = ("cpu.model", "cpu.logical_cores", "cpu.available_cores", "gpu", "os.system", "os.machine")


def package_version(*names: str) -> str | None:
    for n in names:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    """Versions of the tools that shape an artifact or a timing (the exporters' list) and Python."""
    from ..versions import tool_versions

    out: dict[str, str | None] = dict(tool_versions())
    from ..runtimes import list_runtimes

    for key in dict.fromkeys(r.package for r in list_runtimes()):  # every runtime's package, installed or not
        out.setdefault(key, None)
    if out.get("onnxruntime") is None and out.get("onnxruntime-gpu"):
        out["onnxruntime"] = out["onnxruntime-gpu"]  # what comparisons look at, whichever wheel provides it
    out["python"] = platform.python_version()
    return out


def cpu_model() -> str:
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    elif sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    name = platform.processor()
    if name:
        return name
    try:  # slow (seconds), so only as a last resort
        import cpuinfo

        return cpuinfo.get_cpu_info().get("brand_raw", "") or "unknown"
    except Exception:  # noqa: BLE001 - any failure here just means "unknown"
        return "unknown"


def available_cores() -> int:
    """Cores this process may run on (affinity / cgroup CPU set), which can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_quota() -> float | None:
    """The cgroup v2 CPU quota in cores (containers), or None when unlimited or unknown."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_record() -> dict:
    import psutil

    rec = {
        "model": cpu_model(),
        "arch": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "available_cores": available_cores(),
        "cgroup_quota_cores": cpu_quota(),
    }
    try:
        freq = psutil.cpu_freq()
        if freq:
            rec["max_mhz"] = round(freq.max or freq.current, 0)
    except Exception:  # noqa: BLE001 - not available in some containers
        pass
    gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if gov.exists():
        try:
            rec["governor"] = gov.read_text().strip()
        except OSError:
            pass
    return rec


def gpu_record() -> list[dict]:
    """GPUs named by nvidia-smi (no CUDA context is created here)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def git_record(root: Path | None = None) -> dict | None:
    """Commit of the checkout hvit_deploy runs from (or ``root``; CI's GITHUB_SHA as a fallback), and whether it
    has local changes."""
    own = root is None
    from ..resources import package_parent

    root = Path(root) if root else package_parent()
    rec: dict = {}
    if (root / ".git").exists():
        def git(*args: str) -> str | None:
            try:
                r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                return None
            return r.stdout.strip() if r.returncode == 0 else None

        commit = git("rev-parse", "HEAD")
        if commit:
            rec["commit"] = commit
            rec["branch"] = git("rev-parse", "--abbrev-ref", "HEAD")
            status = git("status", "--porcelain", "--untracked-files=no")
            rec["dirty"] = bool(status) if status is not None else None
    if own and not rec.get("commit") and os.environ.get("GITHUB_SHA"):
        rec["commit"] = os.environ["GITHUB_SHA"]
        rec["branch"] = os.environ.get("GITHUB_REF_NAME")
    return rec or None


def memory_gb() -> float:
    import psutil

    return round(psutil.virtual_memory().total / 2**30, 1)


def collect(threads: int | None = None, child_env: dict | None = None, root: Path | None = None) -> dict:
    """The environment record stored at the top of a results file."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    os_rec = {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
              "platform": platform.platform()}
    if sys.platform.startswith("linux"):
        try:
            m = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M)
            if m:
                os_rec["distribution"] = m.group(1)
        except OSError:
            pass
    return {
        "cpu": cpu_record(),
        "memory_gb": memory_gb(),
        "os": os_rec,
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "versions": versions(),
        "git": git_record(root),
        "gpu": gpu_record(),
        "threads": {
            "requested": threads,
            "worker_env": {k: v for k, v in (child_env or {}).items() if k in THREAD_ENV_VARS},
            "parent_env": {k: os.environ[k] for k in THREAD_ENV_VARS if k in os.environ},
        },
        "loadavg_start": load,
        "ci": bool(os.environ.get("CI")),
    }


def get_field(env: dict, dotted: str):
    node = env
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
