"""Freed large tensors go back to the OS: the glibc mmap threshold stays at 1 MB."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import require

# In a fresh process: free one 4 MB block (which, by default, raises glibc's threshold to 4 MB),
# then allocate 3 MB and report how many bytes are in mmapped blocks (mallinfo2().hblkhd).
PROBE = """
import ctypes, sys
from moonshine_live.memory import return_large_blocks_to_the_os
applied = return_large_blocks_to_the_os() if sys.argv[1] == "fixed" else None
libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(3 << 20)
print(applied, libc.mallinfo2().hblkhd - before)
"""


def mapped_bytes(mode: str) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60
    )
    require("glibc >= 2.33 (mallinfo2)", "mallinfo2" not in result.stderr, result.stderr[-300:])
    assert result.returncode == 0, result.stderr
    applied, grown = result.stdout.split()
    return applied, int(grown)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_large_blocks_are_mapped_after_a_free():
    applied, grown = mapped_bytes("fixed")
    assert applied == "True"
    assert grown >= 3 << 20  # the 3 MB block is its own mapping, unmapped when freed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_without_it_glibc_keeps_them_in_the_heap():
    """The control: what the setting changes (if this fails, the test above proves nothing)."""
    applied, grown = mapped_bytes("default")
    assert applied == "None" and grown == 0


def test_is_idempotent():
    from moonshine_live.memory import return_large_blocks_to_the_os

    first = return_large_blocks_to_the_os()
    assert return_large_blocks_to_the_os() == first
