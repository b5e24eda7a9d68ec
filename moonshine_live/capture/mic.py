"""The microphone: `MicSource` on sounddevice (PortAudio), plus device listing and lookup.

`MicSource` opens a sounddevice `InputStream` whose PortAudio callback only copies the block and
hands it to the event loop with `call_soon_threadsafe`. Conversion (stereo mixdown, resampling
when the device refuses 16 kHz), the ring write, overflow counting and logging all run on the
loop. A stream that dies (audio server killed, device unplugged) or stalls raises
`AudioDeviceError` from the iterator within `stall_timeout_s`. sounddevice is imported lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import soxr

from ..errors import AudioDeviceError, ConfigError
from .audio import FRAME_MS, SAMPLE_RATE, float32_to_int16
from .ringbuffer import RingBuffer
from .sources import FRAME_MS_CHOICES, _FrameSource

_LOGGER = logging.getLogger(__name__)

LATENCY_NAMES = ("low", "high")  # PortAudio's named latencies
_RESAMPLE_QUALITY = "HQ"  # same as audio.py: transparent for speech, cheap enough per block
_CLOSE_TIMEOUT_S = 3.0  # closing a stream on a frozen audio server can block; we stop waiting
_WARN_INTERVAL_S = 5.0  # repeated overflow warnings are summarised this often
HISTORY_MS = 31_000
"""Audio already read that the ring keeps: the longest utterance a segmenter may cut (30 s) and
a second of slack (about 1 MB of int16)."""


@dataclass(frozen=True)
class CaptureConfig:
    """Which input device to open and how to read it."""

    device: int | str | None = None
    """Device index, a (case-insensitive) substring of its name, or None for the default input."""
    frame_ms: int = FRAME_MS
    """Length of the frames the source yields (milliseconds): 10, 20 or 30."""
    block_ms: int = 30
    """PortAudio block length (milliseconds); 0 lets PortAudio choose (blocks vary)."""
    latency: float | str = "low"
    """PortAudio suggested input latency: seconds, or "low" / "high"."""
    device_rate: int | None = None
    """Open the device at this rate (hertz) and resample; None tries 16000, then the device's
    default rate."""
    channels: int | None = None
    """Channels to open (mixed down to mono); None tries 1, then the device's maximum."""
    buffer_ms: int = 2_000
    """Audio held for a consumer that falls behind (milliseconds); older audio is dropped and
    counted, the buffer never grows."""
    start_timeout_s: float = 5.0
    """The first block must arrive within this (seconds); a PulseAudio null sink can take 2 s."""
    stall_timeout_s: float = 1.5
    """No block for this long after blocks flowed means the device died (seconds)."""

    def __post_init__(self) -> None:
        if isinstance(self.device, bool) or not isinstance(self.device, int | str | None):
            _fail("device", "an index, a name substring or None", self.device)
        if isinstance(self.device, int) and self.device < 0:
            _fail("device", "an index >= 0", self.device)
        if self.frame_ms not in FRAME_MS_CHOICES:
            _fail("frame_ms", "10, 20 or 30", self.frame_ms)
        if not 0 <= self.block_ms <= 500:
            _fail("block_ms", "[0, 500]", self.block_ms)
        if isinstance(self.latency, str):
            if self.latency not in LATENCY_NAMES:
                _fail("latency", f"seconds or one of {LATENCY_NAMES}", self.latency)
        elif not 0 < self.latency <= 2:
            _fail("latency", "(0, 2] seconds", self.latency)
        if self.device_rate is not None and not 8_000 <= self.device_rate <= 384_000:
            _fail("device_rate", "[8000, 384000] Hz or None", self.device_rate)
        if self.channels is not None and not 1 <= self.channels <= 32:
            _fail("channels", "[1, 32] or None", self.channels)
        if not 10 * self.frame_ms <= self.buffer_ms <= 60_000:
            _fail("buffer_ms", "[10 * frame_ms, 60000]", self.buffer_ms)
        if not 0.1 <= self.start_timeout_s <= 60:
            _fail("start_timeout_s", "[0.1, 60]", self.start_timeout_s)
        if not 0.1 <= self.stall_timeout_s <= 60:
            _fail("stall_timeout_s", "[0.1, 60]", self.stall_timeout_s)


def _fail(field: str, allowed: str, value: object) -> None:
    raise ConfigError(f"CaptureConfig.{field} must be {allowed}, got {value!r}")


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class InputDevice:
    """One PortAudio device that can record."""

    index: int
    name: str
    channels: int
    """Maximum input channels."""
    default_rate: int
    """Default sample rate (hertz)."""
    hostapi: str
    is_default: bool = False

    def __str__(self) -> str:
        default = " [default]" if self.is_default else ""
        return (
            f"{self.index}: {self.name} ({self.hostapi}, {self.channels} ch, "
            f"{self.default_rate} Hz){default}"
        )


def _sounddevice() -> ModuleType:
    """Import sounddevice on first use; a missing PortAudio library is an AudioDeviceError."""
    try:
        import sounddevice
    except OSError as error:  # sounddevice raises OSError when libportaudio is missing
        raise AudioDeviceError(
            f"PortAudio is not available ({error}); install libportaudio2 (Debian/Ubuntu)"
        ) from error
    return sounddevice


def list_devices() -> list[InputDevice]:
    """Input devices PortAudio knows, in index order."""
    sd = _sounddevice()
    hostapis = [api["name"] for api in sd.query_hostapis()]
    try:
        default_index = int(sd.query_devices(kind="input")["index"])
    except sd.PortAudioError:  # no default input
        default_index = -1
    devices = []
    for info in sd.query_devices():
        if info["max_input_channels"] <= 0:
            continue
        devices.append(
            InputDevice(
                index=int(info["index"]),
                name=str(info["name"]),
                channels=int(info["max_input_channels"]),
                default_rate=round(info["default_samplerate"]),
                hostapi=hostapis[info["hostapi"]],
                is_default=info["index"] == default_index,
            )
        )
    return devices


def format_devices(devices: Sequence[InputDevice]) -> str:
    """One device per line, indented, for error messages and `moonshine-live devices`."""
    if not devices:
        return "  (none: PortAudio sees no input device)"
    return "\n".join(f"  {device}" for device in devices)


def resolve_device(
    spec: int | str | None, devices: Sequence[InputDevice] | None = None
) -> InputDevice:
    """The input device meant by an index, a name (substring, case-insensitive) or None.

    Raises AudioDeviceError listing the input devices there are when none (or several) match.
    `devices` defaults to `list_devices()`.
    """
    devices = list(list_devices() if devices is None else devices)
    if spec is None:
        matches = [d for d in devices if d.is_default] or devices[:1]
        what = "default input device"
    elif isinstance(spec, int) or spec.strip().isdigit():
        matches = [d for d in devices if d.index == int(spec)]
        what = f"input device with index {int(spec)}"
    else:
        wanted = spec.strip().lower()
        matches = [d for d in devices if d.name.lower() == wanted] or [
            d for d in devices if wanted in d.name.lower()
        ]
        what = f"input device named like {spec!r}"
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise AudioDeviceError(
            f"{len(matches)} input devices match {spec!r}; give the index or a longer name:\n"
            + format_devices(matches)
        )
    raise AudioDeviceError(f"there is no {what}; input devices are:\n{format_devices(devices)}")


# --------------------------------------------------------------------------- microphone


class _Converter:
    """Device blocks -> int16 mono 16 kHz: channel mixdown, streaming resample (like wyoming's
    AudioChunkConverter). Keeps soxr state between blocks so there are no seams."""

    def __init__(self, rate: int, channels: int) -> None:
        self.rate = rate
        self.channels = channels
        self._resampler = (
            None
            if rate == SAMPLE_RATE
            else soxr.ResampleStream(
                rate, SAMPLE_RATE, 1, dtype="float32", quality=_RESAMPLE_QUALITY
            )
        )

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """block: int16, shape (frames, channels) -> int16, shape (n,)."""
        if self.channels == 1 and self._resampler is None:
            return block[:, 0]
        mono = block.mean(axis=1, dtype=np.float32) / np.float32(32768.0)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        return float32_to_int16(mono)


class MicSource(_FrameSource):
    """Live input from a sounddevice (PortAudio) device, as frames.

    Use `async with MicSource(config) as mic: async for frame in mic: ...`; iterating also
    starts the device. A dead or stalled stream raises `AudioDeviceError` from the iterator
    (after the audio already received) and releases the device; iterating or `start()` again
    reopens it, which is how a caller recovers. Counters: `blocks`, `device_overflows`
    (PortAudio input overflow flags), `overruns` / `dropped_samples` (audio lost because the
    consumer fell more than `buffer_ms` behind).

    One timeline: blocks go into `ring`, addressed by absolute sample index, and a frame is
    that ring's `[frame_start, frame_start + frame_samples)`. The ring holds `HISTORY_MS` of
    audio already read as well, so the segmenter reads utterances from it instead of copying
    every frame into a ring of its own; reopening the device continues the timeline.
    """

    def __init__(self, config: CaptureConfig | None = None) -> None:
        self.config = config or CaptureConfig()
        super().__init__(self.config.frame_ms)
        self._lag_limit = SAMPLE_RATE * self.config.buffer_ms // 1000
        self.ring = RingBuffer(self._lag_limit + SAMPLE_RATE * HISTORY_MS // 1000)
        self._stream: Any = None
        self._closing: asyncio.Future[None] | None = None  # a close still running in a thread
        self._generation = 0  # blocks from an older stream are ignored
        self._wakeup: asyncio.Event | None = None  # made in start(): bound to the running loop
        self._converter = _Converter(SAMPLE_RATE, 1)
        self._next = 0
        self._ended: str | None = None
        self._last_warning = -_WARN_INTERVAL_S
        self.device: InputDevice | None = None
        self.device_rate = self.device_channels = 0
        self.blocks = self.device_overflows = self.overruns = self.dropped_samples = 0

    realtime = True
    reopenable = True
    live = True

    @property
    def history(self) -> RingBuffer:
        """The ring: the segmenter reads utterances from it (`AudioHistory`)."""
        return self.ring

    @property
    def description(self) -> str:
        device = self.config.device
        return f"mic:{device if device is not None else 'default'}"

    @property
    def running(self) -> bool:
        return self._stream is not None

    async def start(self) -> None:
        """Open and start the device; AudioDeviceError (listing devices) when that fails."""
        if self._stream is not None:
            return
        if self._closing is not None:  # never open while PortAudio still closes the last one
            await _wait(self._closing, _CLOSE_TIMEOUT_S)
        sd = _sounddevice()
        self.device = resolve_device(self.config.device)
        self._generation += 1
        self._wakeup = asyncio.Event()
        # the timeline goes on: a reopened stream's audio follows what was read before
        self._ended, self.blocks = None, 0
        self.frame_start = self._next - self.frame_samples
        stream = self._open(sd, asyncio.get_running_loop(), self.device)
        try:
            stream.start()
        except sd.PortAudioError as error:
            stream.close(ignore_errors=True)
            raise AudioDeviceError(f"cannot start input device {self.device}: {error}") from error
        self._stream = stream
        resampled = "" if self.device_rate == SAMPLE_RATE else f", resampled to {SAMPLE_RATE} Hz"
        _LOGGER.info(
            "Recording from %s at %d Hz, %d ch%s",
            self.device, self.device_rate, self.device_channels, resampled,
        )  # fmt: skip

    def _open(self, sd: ModuleType, loop: asyncio.AbstractEventLoop, device: InputDevice) -> Any:
        """Open an InputStream at 16 kHz mono if the device takes it, else its own format."""
        cfg = self.config
        rates = [cfg.device_rate] if cfg.device_rate else [SAMPLE_RATE, device.default_rate]
        channels = [cfg.channels] if cfg.channels else [1, device.channels]
        callback, finished = self._callbacks(sd, loop)
        failures = []
        for rate in dict.fromkeys(rates):
            for count in dict.fromkeys(channels):
                try:
                    stream = sd.InputStream(
                        device=device.index, samplerate=rate, channels=count, dtype="int16",
                        blocksize=rate * cfg.block_ms // 1000, latency=cfg.latency,
                        callback=callback, finished_callback=finished,
                    )  # fmt: skip
                except sd.PortAudioError as error:
                    failures.append(f"{rate} Hz {count} ch: {error}")
                    continue
                self.device_rate, self.device_channels = rate, count
                self._converter = _Converter(rate, count)
                return stream
        tried = "\n  ".join(failures)
        raise AudioDeviceError(
            f"cannot open input device {device}:\n  {tried}\n"
            f"input devices are:\n{format_devices(list_devices())}"
        )

    def _callbacks(self, sd: ModuleType, loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
        """PortAudio-thread callbacks: copy the block and hand it to the loop, nothing else."""
        generation, on_block, on_finished = self._generation, self._on_block, self._on_finished

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            try:
                loop.call_soon_threadsafe(on_block, generation, indata.copy(), status)
            except RuntimeError:  # the loop is closed: nobody listens any more
                raise sd.CallbackAbort from None

        def finished() -> None:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(on_finished, generation)

        return callback, finished

    def _on_block(self, generation: int, block: np.ndarray, status: Any) -> None:
        """On the loop: count flags, convert, store, wake the reader."""
        if generation != self._generation:
            return
        if status:
            self.device_overflows += bool(status.input_overflow)
            self._warn(f"input status {status} ({self.device_overflows} overflows so far)")
        self.ring.write(self._converter(block))
        self.blocks += 1
        assert self._wakeup is not None
        self._wakeup.set()

    def _on_finished(self, generation: int) -> None:
        """On the loop: the stream stopped without us closing it."""
        if generation == self._generation:
            self._ended = "the input stream stopped (audio server gone or device removed?)"
            assert self._wakeup is not None
            self._wakeup.set()

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_INTERVAL_S:
            self._last_warning = now
            _LOGGER.warning("%s: %s", self.device, message)

    async def __anext__(self) -> np.ndarray:
        if self._stream is None:
            await self.start()
        assert self._wakeup is not None
        while self.ring.total_written < self._next + self.frame_samples:
            self._wakeup.clear()
            timeout = self.config.stall_timeout_s if self.blocks else self.config.start_timeout_s
            if self._ended is None:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    self._ended = f"no audio for {timeout:g} s (device stalled?)"
            if self._ended is not None:
                device, why = self.device, self._ended
                self._release()
                raise AudioDeviceError(f"input device {device}: {why}")
        oldest = max(0, self.ring.total_written - self._lag_limit)
        if self._next < oldest:  # the consumer fell behind: skip, count, say
            lost = oldest - self._next
            self.overruns += 1
            self.dropped_samples += lost
            self._warn(f"consumer fell behind; {self.dropped_samples} samples dropped so far")
            self._next += lost
        self.frame_start = self._next
        self._next += self.frame_samples
        return self.ring.read(self.frame_start, self._next)

    async def close(self) -> None:
        """Stop and close the device (idempotent); blocks arriving after this are ignored."""
        closing = self._release()
        if closing is not None:
            await _wait(closing, _CLOSE_TIMEOUT_S)

    def _release(self) -> asyncio.Future[None] | None:
        """Forget the stream now and close it in a thread (see `_close_in_thread`)."""
        stream, self._stream = self._stream, None
        self._generation += 1
        if stream is None:
            return None
        _LOGGER.info(
            "Closing %s after %d blocks, %d overflows, %d samples dropped",
            self.device, self.blocks, self.device_overflows, self.dropped_samples,
        )  # fmt: skip
        self._closing = _close_in_thread(stream)
        return self._closing


def _close_in_thread(stream: Any) -> asyncio.Future[None]:
    """Close a stream in a daemon thread; the future resolves when it is closed.

    Pa_CloseStream on a frozen audio server blocks until the server wakes up (measured with
    a SIGSTOPped PulseAudio), so the loop must never call it directly.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def close() -> None:
        try:
            stream.close(ignore_errors=True)
        finally:
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=close, name="moonshine-live-close", daemon=True).start()
    return done


async def _wait(future: asyncio.Future[None], timeout_s: float) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(future), timeout_s)
    except TimeoutError:
        _LOGGER.warning("Closing the input stream takes over %.0f s; not waiting", timeout_s)
