"""What this CPU can do, read from the OS once: the facts both the kernels and the compiled
packages are keyed on (code built for one CPU's vector units crashes another's)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

VECTOR_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
)
"""CPU features that decide which vector kernels inductor writes (Linux `/proc/cpuinfo` names)."""


@functools.cache
def cpuinfo_flags() -> frozenset[str] | None:
    """The CPU's feature flags as Linux lists them (`flags` on x86, `Features` on ARM); None
    where there is no /proc/cpuinfo or no such line."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags on Linux x86-64 (where our C++ kernels build), else empty."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return frozenset()
    return cpuinfo_flags() or frozenset()


def cpu_vector_features() -> str:
    """This CPU's vector features, read from the OS without importing inductor (whose own ISA
    pick builds probe libraries): equal features mean inductor picks the same kernels."""
    present = cpuinfo_flags()
    if present is None:
        return platform.processor()
    return " ".join(flag for flag in VECTOR_FLAGS if flag in present)
