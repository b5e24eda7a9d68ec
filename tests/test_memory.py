"""Freed activations are reused, not mapped afresh: glibc's thresholds are fixed high."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import require

# In a fresh process: allocate, touch and free a 3 MB block five times (an encoder activation),
# then a 48 MB one; report the page faults of rounds 2-5 and whether the big block was mapped
# (mallinfo2().hblkhd grows while it is alive), so it goes back to the OS when freed.
PROBE = """
import ctypes, resource, sys
from moonshine_live.accel.memory import reuse_freed_memory
libc = ctypes.CDLL("libc.so.6")
if sys.argv[1] == "ours":
    applied = reuse_freed_memory()
else:  # the earlier policy: every block of 1 MB and more is its own mapping
    applied = libc.mallopt(-3, 1 << 20) == 1
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def round_trip(size):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
round_trip(3 << 20)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    round_trip(3 << 20)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
before = libc.mallinfo2().hblkhd
big = libc.malloc(48 << 20)
print(applied, faults, libc.mallinfo2().hblkhd - before)
"""
PAGES_PER_ROUND = (3 << 20) // 4096


def probe(mode: str) -> tuple[str, int, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60
    )
    require("glibc >= 2.33 (mallinfo2)", "mallinfo2" not in result.stderr, result.stderr[-300:])
    assert result.returncode == 0, result.stderr
    applied, faults, mapped = result.stdout.split()
    return applied, int(faults), int(mapped)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_freed_blocks_are_reused_without_page_faults():
    applied, faults, _ = probe("ours")
    assert applied == "True"
    assert faults < PAGES_PER_ROUND // 4, f"{faults} page faults in 4 rounds of 3 MB"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_very_large_blocks_still_get_their_own_mapping():
    _, _, mapped = probe("ours")
    assert mapped >= 48 << 20  # unmapped, so returned to the OS, when freed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_control_a_low_threshold_faults_every_round():
    """The control: the probe does see faults (if this fails, the tests above prove nothing)."""
    applied, faults, _ = probe("mapped")
    assert applied == "True"
    assert faults >= 4 * PAGES_PER_ROUND * 0.9


def test_is_idempotent():
    from moonshine_live.accel.memory import reuse_freed_memory

    first = reuse_freed_memory()
    assert reuse_freed_memory() == first
