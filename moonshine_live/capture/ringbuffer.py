"""`RingBuffer`: fixed-capacity int16 audio addressed by absolute sample index.

Writers append; readers ask for `[start, end)` on the capture timeline (sample 0 is the first
sample ever written). Memory is allocated once: when writers outrun readers the oldest samples are
overwritten and a read that reaches back past them is an overrun, raised or counted, never hidden.

int16 rather than float32: it is what the microphone delivers and webrtcvad consumes, it halves
the memory, and float32 (`audio.int16_to_float32`) is made once per utterance, not per frame.
No asyncio and no devices here.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import MoonshineLiveError
from .audio import int16_to_float32

_LOGGER = logging.getLogger(__name__)

DTYPE = np.dtype(np.int16)


class BufferOverrunError(MoonshineLiveError, LookupError):
    """A read asked for samples the ring has already overwritten."""

    def __init__(self, start: int, oldest_index: int) -> None:
        self.start = start
        self.oldest_index = oldest_index
        self.missing = oldest_index - start
        super().__init__(
            f"samples [{start}, {oldest_index}) were overwritten before they were read "
            f"({self.missing} samples lost); the reader fell behind"
        )


class RingBuffer:
    """A preallocated ring of int16 samples, shape (capacity,), that never grows.

    `write` costs O(len(samples)) copying and nothing else (no allocation). Reads return copies.
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer):
            raise TypeError(f"capacity must be an int (samples), got {capacity!r}")
        if capacity <= 0:
            raise ValueError(f"capacity must be positive (samples), got {capacity}")
        self._data = np.zeros(int(capacity), dtype=DTYPE)
        self._total = 0  # samples ever written (or skipped); the next write lands at this index
        self.overruns = 0
        """Reads that asked for overwritten samples (raised or clipped)."""
        self.dropped_samples = 0
        """Samples asked for by those reads that were already gone."""

    @property
    def capacity(self) -> int:
        return len(self._data)

    @property
    def total_written(self) -> int:
        """Absolute index one past the newest sample (samples written since creation or reset)."""
        return self._total

    @property
    def oldest_index(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self._total - self.capacity)

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    def write(self, samples: np.ndarray) -> None:
        """Append int16 samples, shape (n,); more than `capacity` keeps only the newest."""
        samples = np.asarray(samples)
        if samples.dtype != DTYPE or samples.ndim != 1:
            raise TypeError(
                f"RingBuffer.write takes int16 of shape (n,), got {samples.dtype} {samples.shape}"
            )
        count = len(samples)
        if count > self.capacity:  # the head would be overwritten by the tail at once
            samples = samples[-self.capacity :]
        self._store(self._total + count - len(samples), samples)
        self._total += count

    def skip(self, count: int) -> None:
        """Account for `count` samples that never arrived; they read back as silence (zeros)."""
        if count < 0:
            raise ValueError(f"skip count must be >= 0, got {count}")
        zeros = min(count, self.capacity)
        self._fill(self._total + count - zeros, zeros)
        self._total += count

    def read(self, start: int, end: int, *, strict: bool = True) -> np.ndarray:
        """Copy of samples `[start, end)` on the absolute timeline, shape (end - start,).

        Reaching back past `oldest_index` is an overrun: counted, then `BufferOverrunError`
        when `strict`, else the part still held is returned (shorter than asked) and logged.
        Asking for samples not yet written is a ValueError.
        """
        if not 0 <= start <= end:
            raise ValueError(f"read range must satisfy 0 <= start <= end, got [{start}, {end})")
        if end > self._total:
            raise ValueError(
                f"read [{start}, {end}) reaches past the newest sample ({self._total})"
            )
        oldest = self.oldest_index
        if start < oldest and start < end:
            self.overruns += 1
            self.dropped_samples += min(oldest, end) - start
            if strict:
                raise BufferOverrunError(start, oldest)
            _LOGGER.warning("Ring overrun: samples [%d, %d) lost", start, min(oldest, end))
            start = min(oldest, end)
        return self._gather(start, end)

    def read_float(self, start: int, end: int) -> np.ndarray:
        """`read` as float32 in [-1, 1): what an utterance is made of (`AudioHistory`)."""
        return int16_to_float32(self.read(start, end))

    def latest(self, count: int) -> np.ndarray:
        """Copy of the newest `count` samples (fewer if fewer were ever written), shape (n,)."""
        if count < 0:
            raise ValueError(f"latest count must be >= 0, got {count}")
        if count > self.capacity:
            raise ValueError(f"latest({count}) exceeds the capacity ({self.capacity} samples)")
        end = self._total
        return self._gather(max(0, end - count), end)

    def reset(self) -> None:
        """Forget everything and restart the timeline at 0; the counters are kept."""
        self._total = 0

    def _gather(self, start: int, end: int) -> np.ndarray:
        first = start % self.capacity
        length = end - start
        if first + length <= self.capacity:
            return self._data[first : first + length].copy()
        head = self.capacity - first
        return np.concatenate((self._data[first:], self._data[: length - head]))

    def _store(self, index: int, samples: np.ndarray) -> None:
        first = index % self.capacity
        head = min(len(samples), self.capacity - first)
        self._data[first : first + head] = samples[:head]
        self._data[: len(samples) - head] = samples[head:]

    def _fill(self, index: int, count: int) -> None:
        first = index % self.capacity
        head = min(count, self.capacity - first)
        self._data[first : first + head] = 0
        self._data[: count - head] = 0
