"""Audio sources: the microphone and a file are the same async iterator of int16 frames.

Every source yields contiguous int16 frames, shape (frame_samples,), at 16 kHz mono, and is
an async context manager (`async with source: async for frame in source: ...`). `frame_start`
is the absolute sample index of the frame just returned; it jumps ahead only when a microphone
consumer fell so far behind that audio was dropped (counted in `dropped_samples`).
`ArraySource` and `FileSource` live here; the microphone (`MicSource`) is in `mic.py`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np

from ..errors import ConfigError
from .audio import FRAME_MS, SAMPLE_RATE, float32_to_int16, load_audio, validate_audio

_LOGGER = logging.getLogger(__name__)

FRAME_MS_CHOICES = (10, 20, 30)  # frame lengths webrtcvad accepts


class AudioHistory(Protocol):
    """Audio on the timeline that a reader may still fetch, by absolute sample index."""

    @property
    def oldest_index(self) -> int: ...

    def read_float(self, start: int, end: int) -> np.ndarray:
        """float32 samples [start, end), shape (end - start,)."""
        ...


@runtime_checkable
class AudioSource(Protocol):
    """An async iterator of contiguous int16 frames, shape (frame_samples,), 16 kHz mono."""

    sample_rate: int
    frame_samples: int
    frame_start: int
    """Absolute sample index of the frame last returned."""
    realtime: bool
    """Frames come at the pace of speech (a consumer that falls behind loses audio); False: as
    fast as they are taken (the engine then waits for the model instead of dropping)."""
    reopenable: bool
    """After an `AudioDeviceError` mid-stream, starting again may work (a microphone)."""
    description: str
    """For people and the `ready` event: "mic:default", "file:command.wav"."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    def __aiter__(self) -> Self: ...

    async def __anext__(self) -> np.ndarray: ...


class _FrameSource:
    """Shared plumbing: the context manager and iterator protocol around start() and close()."""

    sample_rate = SAMPLE_RATE
    realtime = True
    reopenable = False

    def __init__(self, frame_ms: int) -> None:
        if frame_ms not in FRAME_MS_CHOICES:
            raise ConfigError(f"frame_ms must be 10, 20 or 30, got {frame_ms!r}")
        self.frame_ms = frame_ms
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000
        self.frame_start = -self.frame_samples  # no frame returned yet

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self


@dataclass(frozen=True)
class SourceTraits:
    """What a source can do, with the defaults for a source written before it said so."""

    realtime: bool = True
    reopenable: bool = False
    live: bool = False
    """A capture device (a microphone), not a recording: what it gives exists only once, so
    nothing has to come out the same at another speed."""
    description: str = "audio"
    history: AudioHistory | None = None
    """The source's audio on the timeline (a microphone's ring, a file's samples): the
    segmenter reads utterances from it, in the source's own format. None: frames are all
    there is, and the segmenter keeps a ring of them."""

    @classmethod
    def of(cls, source: object) -> SourceTraits:
        history = getattr(source, "history", None)
        readable = hasattr(history, "read_float") and hasattr(history, "oldest_index")
        return cls(
            realtime=bool(getattr(source, "realtime", True)),
            reopenable=bool(getattr(source, "reopenable", False)),
            live=bool(getattr(source, "live", False)),
            description=str(getattr(source, "description", f"file:{_name_of(source)}")),
            history=history if readable else None,
        )


def _name_of(source: object) -> str:
    return str(getattr(source, "name", "audio"))


# --------------------------------------------------------------------------- arrays and files


class ArraySource(_FrameSource):
    """Audio already in memory, as frames; any rate, channels or dtype `validate_audio` takes.

    `realtime=True` paces frames like a microphone (frame k arrives when its last sample would
    have been captured); otherwise frames come as fast as the consumer takes them. The last
    frame is padded with zeros to full length.
    """

    def __init__(
        self,
        audio: np.ndarray,
        *,
        sample_rate: int = SAMPLE_RATE,
        realtime: bool = False,
        frame_ms: int = FRAME_MS,
        name: str = "audio",
    ) -> None:
        super().__init__(frame_ms)
        self.name = name
        self.realtime = realtime
        samples = validate_audio(audio, sample_rate, name=name)
        self.num_samples = len(samples)
        self.num_frames = -(-len(samples) // self.frame_samples)
        # the audio as given (utterances are read from it) and as int16 frames (for the VAD)
        self._audio = np.zeros(self.num_frames * self.frame_samples, dtype=np.float32)
        self._audio[: len(samples)] = samples
        self._pcm = float32_to_int16(self._audio)
        self._audio.flags.writeable = self._pcm.flags.writeable = False  # frames are views
        self._index = 0
        self._started_at: float | None = None

    @property
    def description(self) -> str:
        return f"file:{self.name}"

    oldest_index = 0
    """Every sample stays readable (`AudioHistory`)."""

    @property
    def history(self) -> ArraySource:
        """The source itself: utterances are read from the float32 audio, never from int16."""
        return self

    def read_float(self, start: int, end: int) -> np.ndarray:
        if not 0 <= start <= end <= len(self._audio):
            raise ValueError(f"{self.name}: no samples [{start}, {end}) in {len(self._audio)}")
        return self._audio[start:end].copy()

    @property
    def duration_s(self) -> float:
        return self.num_samples / SAMPLE_RATE

    async def start(self) -> None:
        """Rewind to the first frame (a realtime clock starts with it)."""
        self._index = 0
        self._started_at = asyncio.get_running_loop().time()
        self.frame_start = -self.frame_samples

    async def close(self) -> None:
        self._index = self.num_frames

    async def __anext__(self) -> np.ndarray:
        if self._started_at is None:
            await self.start()
        if self._index >= self.num_frames:
            raise StopAsyncIteration
        if self.realtime:
            assert self._started_at is not None
            due = self._started_at + (self._index + 1) * self.frame_ms / 1000
            await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
        else:
            await asyncio.sleep(0)  # a fast source still lets other tasks run
        start = self._index * self.frame_samples
        self._index += 1
        self.frame_start = start
        return self._pcm[start : start + self.frame_samples]


class FileSource(ArraySource):
    """A sound file (WAV, FLAC, OGG... any rate or channels) as frames, like `ArraySource`.

    The file is read and converted when the source is built; errors name the file.
    """

    def __init__(
        self, path: str | Path, *, realtime: bool = False, frame_ms: int = FRAME_MS
    ) -> None:
        self.path = Path(path)
        super().__init__(
            load_audio(self.path), realtime=realtime, frame_ms=frame_ms, name=str(path)
        )
