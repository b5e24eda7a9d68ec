"""Process memory: large tensors go back to the operating system when freed.

glibc serves big allocations with their own mmap and unmaps them on free, but after the first
such free it raises that size threshold (up to 32 MB). Our encoder's activations (1-10 MB each)
then land in the heap, which keeps its high-water mark: a 10 s utterance left the process 30 MB
larger for good and put the peak over the 600 MB budget (600-602 MB vs 579-581 MB with the
threshold fixed at 1 MB, 2026-12-01; encoder time unchanged, while 256 KB made it 20% slower).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

_LOGGER = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""mallopt parameter number (glibc malloc.h); setting it also stops the dynamic adjustment."""
MMAP_THRESHOLD_BYTES = 1 << 20
_applied = False


def return_large_blocks_to_the_os() -> bool:
    """Fix glibc's mmap threshold at 1 MB, once per process; False where that is not glibc.

    Process-wide by nature: blocks of 1 MB and more in the host application are mapped and
    unmapped too, which costs it nothing measurable and keeps its memory from creeping up.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to do
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    if not _applied:
        _LOGGER.debug("mallopt(M_MMAP_THRESHOLD) refused; memory may creep after long clips")
    return _applied
