"""RingBuffer: absolute-index reads against a reference array, overruns counted, no growth."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moonshine_live.capture.ringbuffer import BufferOverrunError, RingBuffer
from moonshine_live.errors import MoonshineLiveError


def ramp(start: int, count: int) -> np.ndarray:
    """Samples whose value encodes their absolute index (mod 2**16), shape (count,)."""
    return (np.arange(start, start + count) % 65536 - 32768).astype(np.int16)


def test_empty_ring() -> None:
    ring = RingBuffer(8)
    assert (ring.capacity, ring.total_written, ring.oldest_index) == (8, 0, 0)
    assert ring.read(0, 0).shape == (0,)
    assert ring.latest(5).shape == (0,)
    assert ring.nbytes == 16


def test_reads_by_absolute_index_across_the_wrap() -> None:
    ring = RingBuffer(10)
    ring.write(ramp(0, 7))
    ring.write(ramp(7, 7))  # wraps: holds samples 4..13
    assert (ring.total_written, ring.oldest_index) == (14, 4)
    np.testing.assert_array_equal(ring.read(4, 14), ramp(4, 10))
    np.testing.assert_array_equal(ring.read(8, 11), ramp(8, 3))
    np.testing.assert_array_equal(ring.latest(6), ramp(8, 6))
    assert ring.overruns == 0


def test_reads_are_copies() -> None:
    ring = RingBuffer(4)
    ring.write(ramp(0, 4))
    out = ring.read(0, 4)
    out[:] = 0
    np.testing.assert_array_equal(ring.read(0, 4), ramp(0, 4))


def test_write_longer_than_capacity_keeps_the_newest() -> None:
    ring = RingBuffer(5)
    ring.write(ramp(0, 3))
    ring.write(ramp(3, 12))
    assert (ring.total_written, ring.oldest_index) == (15, 10)
    np.testing.assert_array_equal(ring.read(10, 15), ramp(10, 5))


def test_strict_read_of_overwritten_samples_raises_and_counts() -> None:
    ring = RingBuffer(10)
    ring.write(ramp(0, 25))
    with pytest.raises(BufferOverrunError, match=r"\[12, 15\).*3 samples lost") as caught:
        ring.read(12, 20)
    assert isinstance(caught.value, MoonshineLiveError)
    assert (caught.value.start, caught.value.oldest_index, caught.value.missing) == (12, 15, 3)
    assert (ring.overruns, ring.dropped_samples) == (1, 3)


def test_lenient_read_returns_what_is_left_and_counts() -> None:
    ring = RingBuffer(10)
    ring.write(ramp(0, 25))
    np.testing.assert_array_equal(ring.read(12, 20, strict=False), ramp(15, 5))
    assert ring.read(0, 5, strict=False).shape == (0,)  # entirely gone
    assert (ring.overruns, ring.dropped_samples) == (2, 8)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [(-1, 3, "0 <= start <= end"), (5, 3, "0 <= start <= end"), (2, 9, "newest sample")],
)
def test_bad_read_ranges(start: int, end: int, message: str) -> None:
    ring = RingBuffer(10)
    ring.write(ramp(0, 8))
    with pytest.raises(ValueError, match=message):
        ring.read(start, end)


def test_latest_checks_its_count() -> None:
    ring = RingBuffer(4)
    with pytest.raises(ValueError, match="exceeds the capacity"):
        ring.latest(5)
    with pytest.raises(ValueError, match=">= 0"):
        ring.latest(-1)


@pytest.mark.parametrize("samples", [np.zeros(3, np.float32), np.zeros((3, 1), np.int16)])
def test_write_takes_only_int16_vectors(samples: np.ndarray) -> None:
    with pytest.raises(TypeError, match="int16 of shape"):
        RingBuffer(4).write(samples)


@pytest.mark.parametrize(
    ("capacity", "error"), [(0, ValueError), (-3, ValueError), (2.5, TypeError)]
)
def test_capacity_is_checked(capacity: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="capacity"):
        RingBuffer(capacity)  # type: ignore[arg-type]


def test_skip_reads_back_as_silence() -> None:
    ring = RingBuffer(8)
    ring.write(ramp(1, 3))
    ring.skip(2)
    ring.write(ramp(9, 2))
    assert ring.total_written == 7
    expected = np.concatenate((ramp(1, 3), np.zeros(2, np.int16), ramp(9, 2)))
    np.testing.assert_array_equal(ring.read(0, 7), expected)
    ring.skip(100)
    assert (ring.total_written, ring.oldest_index) == (107, 99)
    np.testing.assert_array_equal(ring.latest(8), np.zeros(8, np.int16))


def test_reset_restarts_the_timeline() -> None:
    ring = RingBuffer(4)
    ring.write(ramp(0, 6))
    ring.reset()
    assert (ring.total_written, ring.oldest_index) == (0, 0)
    ring.write(ramp(100, 2))
    np.testing.assert_array_equal(ring.read(0, 2), ramp(100, 2))


def test_memory_never_grows() -> None:
    ring = RingBuffer(4800)
    block = ramp(0, 480)
    storage = ring._data
    tracemalloc.start()
    try:
        for _ in range(200):  # warm up allocator caches
            ring.write(block)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            ring.write(block)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 4096
    assert ring._data is storage and ring.nbytes == 4800 * 2


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 64),
    steps=st.lists(
        st.tuples(st.integers(0, 150), st.integers(0, 200), st.integers(0, 200)),
        min_size=1,
        max_size=40,
    ),
)
def test_matches_a_reference_array(capacity: int, steps: list[tuple[int, int, int]]) -> None:
    """Random writes and reads: held samples equal the reference, lost ones are counted."""
    ring = RingBuffer(capacity)
    storage = ring._data
    reference = np.zeros(0, np.int16)
    overruns = dropped = 0
    for size, back_a, back_b in steps:
        block = ramp(len(reference), size)
        ring.write(block)
        reference = np.concatenate((reference, block))
        total = len(reference)
        assert ring.total_written == total
        assert ring.oldest_index == max(0, total - capacity)
        start, end = sorted((max(0, total - back_a), max(0, total - back_b)))
        lost = max(0, min(ring.oldest_index, end) - start)
        if lost:
            overruns, dropped = overruns + 1, dropped + lost
            with pytest.raises(BufferOverrunError):
                ring.read(start, end)
            np.testing.assert_array_equal(
                ring.read(start, end, strict=False), reference[start + lost : end]
            )
            overruns, dropped = overruns + 1, dropped + lost
        else:
            np.testing.assert_array_equal(ring.read(start, end), reference[start:end])
        np.testing.assert_array_equal(ring.latest(min(capacity, 7)), reference[-7:][-capacity:])
        assert (ring.overruns, ring.dropped_samples) == (overruns, dropped)
    assert ring._data is storage and len(storage) == capacity
