"""What this machine's CPU can do, for the choices that depend on it (INT8 kernels, BF16 compute).

Read from the flags the operating system reports (``/proc/cpuinfo`` on Linux; py-cpuinfo elsewhere). Cached: the
answer does not change while the process runs.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")   # 8-bit dot products without int16 saturation
BF16_FLAGS = ("avx512_bf16", "amx_bf16")               # native bfloat16 arithmetic


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
        return frozenset()
    try:
        import cpuinfo

        return frozenset(cpuinfo.get_cpu_info().get("flags", []))
    except Exception:  # noqa: BLE001  (an unknown CPU simply has no known flags)
        return frozenset()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def has_vnni() -> bool:
    """8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX): ONNX Runtime's U8S8 kernels then multiply
    without the int16 saturation of AVX2's ``vpmaddubsw``."""
    return bool(cpu_flags() & set(VNNI_FLAGS))


def has_bf16() -> bool:
    """Native BF16 arithmetic (AVX-512 BF16 or AMX-BF16)."""
    return bool(cpu_flags() & set(BF16_FLAGS))
