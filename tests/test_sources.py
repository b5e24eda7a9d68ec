"""Audio sources: arrays and files as frames, device lookup, and the microphone path.

MicSource runs twice: against a scripted fake sounddevice (rate fallback, mixdown, overflows,
a consumer that falls behind, a stream that dies or stalls) and for real through PulseAudio's
null sink (tests/audio_server.py), where paplay speaks into the "microphone" and the audio
server is killed or frozen mid-stream. Every await on a source is bounded by TIMEOUT.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from audio_server import VirtualMic, best_alignment
from audio_server import virtual_mic as virtual_mic  # the fixture; `as` marks it used
from speech import tts_wav

import moonshine_live.capture.mic as mic
from moonshine_live.capture.audio import (
    SAMPLE_RATE,
    float32_to_int16,
    int16_to_float32,
    load_audio,
    write_wav,
)
from moonshine_live.capture.mic import (
    CaptureConfig,
    InputDevice,
    MicSource,
    format_devices,
    list_devices,
    resolve_device,
)
from moonshine_live.capture.sources import ArraySource, AudioSource, FileSource
from moonshine_live.errors import AudioDeviceError, AudioFormatError, ConfigError

TIMEOUT = 10.0
"""Upper bound on any single await on a source (seconds)."""


def tone(seconds: float, rate: int = SAMPLE_RATE, hz: float = 440.0, amplitude: float = 0.5):
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def chirp(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A 200 Hz -> 5 kHz sweep: unlike a tone, it aligns at exactly one lag."""
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * (200 * t + (5000 - 200) / (2 * seconds) * t**2)
    return (0.5 * np.sin(phase)).astype(np.float32)


async def collect(source: AudioSource, limit: int | None = None) -> list[np.ndarray]:
    """Frames until the source ends (or `limit` frames), each await bounded by TIMEOUT."""
    frames = []
    while limit is None or len(frames) < limit:
        try:
            frames.append(await asyncio.wait_for(anext(source), TIMEOUT))
        except StopAsyncIteration:
            break
    return frames


# ----------------------------------------------------------------------------- arrays, files


async def test_array_source_yields_padded_int16_frames() -> None:
    audio = tone(1.0)[:1000]
    source = ArraySource(audio)
    assert isinstance(source, AudioSource)
    async with source:
        frames = await collect(source)
    assert [f.shape for f in frames] == [(480,)] * 3
    assert all(f.dtype == np.int16 for f in frames)
    joined = np.concatenate(frames)
    np.testing.assert_array_equal(joined[:1000], float32_to_int16(audio))
    np.testing.assert_array_equal(joined[1000:], 0)
    assert source.frame_start == 960 and source.num_frames == 3


async def test_array_source_converts_rate_and_channels() -> None:
    stereo = np.stack([tone(1.0, 44100), tone(1.0, 44100)], axis=1)
    source = ArraySource(stereo, sample_rate=44100, frame_ms=10)
    frames = await collect(source)
    assert len(frames) == 100 and frames[0].shape == (160,)
    recorded = int16_to_float32(np.concatenate(frames))
    np.testing.assert_allclose(recorded[100:-100], tone(1.0)[100:-100], atol=2e-3)


async def test_array_source_can_be_replayed() -> None:
    source = ArraySource(tone(0.1))
    first = await collect(source)
    await source.start()
    again = await collect(source)
    assert len(first) == len(again) == 4


async def test_fast_source_runs_faster_than_real_time() -> None:
    started = time.perf_counter()
    frames = await collect(ArraySource(tone(5.0)))
    assert len(frames) == 167 and time.perf_counter() - started < 1.0


async def test_realtime_source_is_paced_like_a_microphone() -> None:
    source = ArraySource(tone(1.2), realtime=True)
    started = time.perf_counter()
    first = await asyncio.wait_for(anext(source), TIMEOUT)
    first_at = time.perf_counter() - started
    rest = await collect(source)
    elapsed = time.perf_counter() - started
    assert first.shape == (480,) and len(rest) == 39
    assert 0.02 <= first_at < 0.2  # a frame arrives once its 30 ms would have been captured
    assert 1.15 <= elapsed < 1.5


async def test_file_source_reads_any_rate(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    write_wav(path, np.stack([tone(0.5, 22050)] * 2, axis=1), 22050)
    source = FileSource(path)
    assert source.path == path and source.duration_s == pytest.approx(0.5)
    frames = await collect(source)
    assert len(frames) == 17
    recorded = int16_to_float32(np.concatenate(frames))[: len(tone(0.5))]
    np.testing.assert_allclose(recorded[100:-100], tone(0.5)[100:-100], atol=2e-3)


def test_file_source_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioFormatError, match=r"missing\.wav: audio file not found"):
        FileSource(missing)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(AudioFormatError, match=r"garbage\.wav: cannot read audio"):
        FileSource(garbage)
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0, np.int16))
    with pytest.raises(AudioFormatError, match=r"empty\.wav: audio is empty"):
        FileSource(empty)


def test_sources_reject_other_frame_lengths() -> None:
    with pytest.raises(ConfigError, match="frame_ms must be 10, 20 or 30, got 25"):
        ArraySource(tone(0.1), frame_ms=25)


# ----------------------------------------------------------------------------- config, devices


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device", -1),
        ("device", 1.5),
        ("frame_ms", 15),
        ("block_ms", 1000),
        ("latency", "medium"),
        ("latency", 0.0),
        ("device_rate", 1000),
        ("channels", 0),
        ("buffer_ms", 100),
        ("start_timeout_s", 0.0),
        ("stall_timeout_s", 100.0),
    ],
)
def test_capture_config_errors_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"CaptureConfig\.{field} must be"):
        CaptureConfig(**{field: value})


DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", 2, 48000, "ALSA"),
    InputDevice(1, "USB Audio Device: Mic (hw:1,0)", 1, 44100, "ALSA"),
    InputDevice(2, "pulse", 32, 44100, "ALSA"),
    InputDevice(3, "default", 32, 44100, "ALSA", is_default=True),
]


@pytest.mark.parametrize(
    ("spec", "index"),
    [(None, 3), (1, 1), ("2", 2), ("usb", 1), ("ALC257", 0), ("Pulse", 2), ("default", 3)],
)
def test_resolve_device(spec: int | str | None, index: int) -> None:
    assert resolve_device(spec, DEVICES).index == index


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("webcam", r"there is no input device named like 'webcam'; input devices are:"),
        (7, "there is no input device with index 7; input devices are:"),
        ("hw:", r"2 input devices match 'hw:'; give the index or a longer name"),
    ],
)
def test_missing_device_lists_the_devices(spec: int | str, message: str) -> None:
    with pytest.raises(AudioDeviceError, match=message) as caught:
        resolve_device(spec, DEVICES)
    assert "1: USB Audio Device: Mic (hw:1,0) (ALSA, 1 ch, 44100 Hz)" in str(caught.value)


def test_no_devices_at_all() -> None:
    with pytest.raises(
        AudioDeviceError, match=r"there is no default input device; input devices are:\n.*none"
    ):
        resolve_device(None, [])


def test_format_devices_marks_the_default() -> None:
    assert format_devices(DEVICES[2:]).splitlines() == [
        "  2: pulse (ALSA, 32 ch, 44100 Hz)",
        "  3: default (ALSA, 32 ch, 44100 Hz) [default]",
    ]


# ----------------------------------------------------------------------------- fake sounddevice


class FakePortAudioError(Exception):
    pass


class FakeFlags:
    def __init__(self, input_overflow: bool = False) -> None:
        self.input_overflow = input_overflow

    def __bool__(self) -> bool:
        return self.input_overflow

    def __str__(self) -> str:
        return "input overflow" if self.input_overflow else ""


class FakeStream:
    """Records how it was opened; `feed` plays the PortAudio thread calling back."""

    def __init__(self, fake: FakeSoundDevice, **kwargs: Any) -> None:
        if not fake.accepts(kwargs["samplerate"], kwargs["channels"]):
            raise FakePortAudioError("Invalid sample rate [PaErrorCode -9997]")
        self.kwargs = kwargs
        self.closed = False
        fake.streams.append(self)

    def start(self) -> None:
        pass

    def close(self, ignore_errors: bool = True) -> None:
        self.closed = True

    def feed(self, blocks: list[np.ndarray], overflow_at: int = -1) -> None:
        """Call the callback from another thread, as PortAudio does."""

        def run() -> None:
            for number, block in enumerate(blocks):
                self.kwargs["callback"](block, len(block), None, FakeFlags(number == overflow_at))

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    def die(self) -> None:
        threading.Thread(target=self.kwargs["finished_callback"]).start()


class FakeSoundDevice:
    """Just enough of the sounddevice module for MicSource: one device, chosen refusals."""

    PortAudioError = FakePortAudioError

    class CallbackAbort(Exception):  # sounddevice's name
        pass

    def __init__(self, rate: int = 44100, channels: int = 2, accepts: Callable | None = None):
        self.device = {
            "index": 0, "name": "Fake Mic", "hostapi": 0, "max_input_channels": channels,
            "max_output_channels": 0, "default_samplerate": float(rate),
        }  # fmt: skip
        self.accepts = accepts or (lambda rate, channels: True)
        self.streams: list[FakeStream] = []

    def query_hostapis(self) -> list[dict]:
        return [{"name": "Fake API"}]

    def query_devices(self, kind: str | None = None) -> Any:
        return self.device if kind == "input" else [self.device]

    def InputStream(self, **kwargs: Any) -> FakeStream:  # sounddevice's name
        return FakeStream(self, **kwargs)


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeSoundDevice]:
    def install(**kwargs: Any) -> FakeSoundDevice:
        fake = FakeSoundDevice(**kwargs)
        monkeypatch.setattr(mic, "_sounddevice", lambda: fake)
        return fake

    return install


def blocks_of(audio: np.ndarray, size: int) -> list[np.ndarray]:
    """int16 (T, channels) -> PortAudio-style blocks of `size` frames."""
    return [audio[i : i + size] for i in range(0, len(audio) - size + 1, size)]


async def test_mic_falls_back_to_the_device_rate_and_mixes_down(fake_sd) -> None:
    fake = fake_sd(rate=44100, channels=2, accepts=lambda rate, channels: rate != 16000)
    async with MicSource() as mic:
        assert (mic.device_rate, mic.device_channels) == (44100, 1)
        (stream,) = fake.streams
        assert stream.kwargs["blocksize"] == 1323 and stream.kwargs["dtype"] == "int16"
        stream.feed(blocks_of(float32_to_int16(chirp(1.0, 44100))[:, None], 1323))
        frames = await collect(mic, 30)
    recorded = int16_to_float32(np.concatenate(frames))
    lag, correlation = best_alignment(recorded, chirp(1.0)[1000:8000])
    assert correlation > 0.999 and abs(lag - 1000) <= 2  # no delay added by the resampler
    await asyncio.sleep(0.05)
    assert stream.closed


async def test_mic_mixes_stereo_when_mono_is_refused(fake_sd) -> None:
    fake = fake_sd(rate=16000, channels=2, accepts=lambda rate, channels: channels == 2)
    left = tone(0.6, amplitude=0.8)
    stereo = float32_to_int16(np.stack([left, np.zeros_like(left)], axis=1))
    async with MicSource() as mic:
        assert (mic.device_rate, mic.device_channels) == (16000, 2)
        fake.streams[0].feed(blocks_of(stereo, 480))
        frames = await collect(mic, 20)
    recorded = int16_to_float32(np.concatenate(frames))
    np.testing.assert_allclose(recorded, left / 2, atol=2 / 32768)


async def test_mic_counts_device_overflows(fake_sd, caplog) -> None:
    fake = fake_sd(rate=16000, channels=1)
    async with MicSource() as mic:
        fake.streams[0].feed([np.zeros((480, 1), np.int16)] * 5, overflow_at=2)
        await collect(mic, 5)
        assert (mic.blocks, mic.device_overflows, mic.dropped_samples) == (5, 1, 0)
    assert "input overflow" in caplog.text


async def test_mic_consumer_falling_behind_drops_and_counts(fake_sd) -> None:
    fake = fake_sd(rate=16000, channels=1)
    config = CaptureConfig(buffer_ms=300)  # 10 frames
    pcm = float32_to_int16(np.arange(16 * 480) / 16 / 480 - 0.5)[:, None]
    async with MicSource(config) as mic:
        fake.streams[0].feed(blocks_of(pcm, 480))  # 16 frames while nobody reads
        frames = await collect(mic, 10)
        assert (mic.overruns, mic.dropped_samples) == (1, 6 * 480)
        assert mic.frame_start == 15 * 480
    np.testing.assert_array_equal(np.concatenate(frames), pcm[6 * 480 :, 0])


async def test_mic_stream_finishing_is_an_error_after_buffered_audio(fake_sd) -> None:
    fake = fake_sd(rate=16000, channels=1)
    mic = MicSource()
    await asyncio.wait_for(mic.start(), TIMEOUT)
    fake.streams[0].feed([np.ones((480, 1), np.int16)] * 2)
    fake.streams[0].die()
    assert len(await collect(mic, 2)) == 2  # what arrived is still delivered
    started = time.perf_counter()
    with pytest.raises(AudioDeviceError, match=r"Fake Mic.*input stream stopped"):
        await asyncio.wait_for(anext(mic), TIMEOUT)
    assert time.perf_counter() - started < 0.5
    assert not mic.running
    await asyncio.sleep(0.05)
    assert fake.streams[0].closed
    # Recovery: iterating again reopens the device.
    frames_task = asyncio.ensure_future(asyncio.wait_for(anext(mic), TIMEOUT))
    await asyncio.sleep(0.05)
    assert mic.running and len(fake.streams) == 2
    fake.streams[1].feed([np.ones((480, 1), np.int16)])
    assert (await frames_task).shape == (480,)
    await mic.close()


async def test_mic_stall_is_an_error(fake_sd) -> None:
    fake = fake_sd(rate=16000, channels=1)
    async with MicSource(CaptureConfig(stall_timeout_s=0.3)) as mic:
        fake.streams[0].feed([np.zeros((480, 1), np.int16)])
        await collect(mic, 1)
        started = time.perf_counter()
        with pytest.raises(AudioDeviceError, match=r"no audio for 0\.3 s"):
            await asyncio.wait_for(anext(mic), TIMEOUT)
        assert 0.25 < time.perf_counter() - started < 1.0


async def test_mic_without_any_block_times_out(fake_sd) -> None:
    fake_sd(rate=16000, channels=1)
    async with MicSource(CaptureConfig(start_timeout_s=0.2)) as mic:
        with pytest.raises(AudioDeviceError, match=r"no audio for 0\.2 s"):
            await asyncio.wait_for(anext(mic), TIMEOUT)


async def test_blocks_from_a_closed_stream_are_ignored(fake_sd) -> None:
    fake = fake_sd(rate=16000, channels=1)
    mic = MicSource()
    await mic.start()
    await mic.close()
    fake.streams[0].feed([np.zeros((480, 1), np.int16)] * 3)
    await asyncio.sleep(0.05)
    assert mic.blocks == 0


async def test_mic_that_cannot_open_lists_what_was_tried(fake_sd) -> None:
    fake_sd(rate=48000, channels=2, accepts=lambda rate, channels: False)
    with pytest.raises(AudioDeviceError) as caught:
        await asyncio.wait_for(MicSource().start(), TIMEOUT)
    message = str(caught.value)
    assert "cannot open input device 0: Fake Mic" in message
    for attempt in ("16000 Hz 1 ch", "16000 Hz 2 ch", "48000 Hz 1 ch", "48000 Hz 2 ch"):
        assert attempt in message
    assert "input devices are:\n  0: Fake Mic (Fake API, 2 ch, 48000 Hz) [default]" in message


async def test_mic_with_a_missing_device_lists_the_devices(fake_sd) -> None:
    fake_sd()
    with pytest.raises(AudioDeviceError, match=r"no input device named like 'usb'[^$]*Fake Mic"):
        await asyncio.wait_for(MicSource(CaptureConfig(device="usb")).start(), TIMEOUT)


# ----------------------------------------------------------------------------- real capture

SPEECH = "turn on the kitchen lights and set the volume to forty percent"
EXTRA_S = 0.6  # recorded after the clip: paplay start-up and stream latency


async def capture_while_playing(
    mic_server: VirtualMic, wav: Path, config: CaptureConfig
) -> tuple[np.ndarray, MicSource]:
    """Record through MicSource while paplay plays `wav` into the virtual microphone."""
    duration = soundfile.info(str(wav)).duration
    frames = []
    async with MicSource(config) as mic:
        frames.append(await asyncio.wait_for(anext(mic), TIMEOUT))  # blocks flow: now play
        player = mic_server.play(wav)
        while len(frames) * mic.frame_samples < (duration + EXTRA_S) * SAMPLE_RATE:
            frames.append(await asyncio.wait_for(anext(mic), TIMEOUT))
        assert await asyncio.wait_for(asyncio.to_thread(player.wait), TIMEOUT) == 0
    return int16_to_float32(np.concatenate(frames)), mic


@pytest.mark.needs_audio_device
def test_list_devices_sees_the_virtual_mic(virtual_mic: VirtualMic) -> None:
    devices = list_devices()
    assert "pulse" in [d.name for d in devices]
    assert resolve_device("PULSE").name == "pulse"
    with pytest.raises(AudioDeviceError, match=r"no input device named like 'nope'[^$]*pulse"):
        resolve_device("nope")


@pytest.mark.needs_audio_device
@pytest.mark.parametrize(
    "config",
    [
        CaptureConfig(device="pulse"),
        CaptureConfig(device="pulse", device_rate=44100, channels=2, block_ms=20),
    ],
    ids=["16k-mono", "44k1-stereo-resampled"],
)
async def test_mic_records_what_is_played(virtual_mic: VirtualMic, config: CaptureConfig) -> None:
    wav = tts_wav(SPEECH)
    recorded, mic = await capture_while_playing(virtual_mic, wav, config)
    played = load_audio(wav)
    lag, correlation = best_alignment(recorded, played)
    assert correlation > 0.99, (lag, correlation)
    assert 0 < lag < 0.3 * SAMPLE_RATE  # the clip started soon after paplay did
    assert (mic.device_overflows, mic.dropped_samples) == (0, 0)
    assert mic.device_rate == (config.device_rate or SAMPLE_RATE)


@pytest.mark.needs_audio_device
async def test_server_killed_mid_stream_raises_and_recovers(virtual_mic: VirtualMic) -> None:
    mic = MicSource(CaptureConfig(device="pulse"))
    async with mic:
        await collect(mic, 10)
        virtual_mic.kill()
        killed = time.perf_counter()
        with pytest.raises(AudioDeviceError, match="pulse"):
            await collect(mic, 1000)
        assert time.perf_counter() - killed < 3.0
        assert not mic.running
        # While the server is down the device cannot be opened.
        with pytest.raises(AudioDeviceError, match="cannot open input device"):
            await asyncio.wait_for(mic.start(), TIMEOUT)
        # The server comes back: the same source records again.
        await asyncio.to_thread(virtual_mic.restart)
        assert len(await collect(mic, 5)) == 5
    assert not mic.running


@pytest.mark.needs_audio_device
async def test_frozen_server_is_detected_as_a_stall(virtual_mic: VirtualMic) -> None:
    mic = MicSource(CaptureConfig(device="pulse", stall_timeout_s=1.0))
    try:
        async with mic:
            await collect(mic, 5)
            virtual_mic.freeze()
            frozen = time.perf_counter()
            with pytest.raises(AudioDeviceError, match=r"no audio for 1 s"):
                await collect(mic, 1000)
            assert time.perf_counter() - frozen < 2.5
    finally:
        virtual_mic.thaw()


async def test_a_reopened_mic_continues_one_timeline(fake_sd) -> None:
    """The mic's ring is the pipeline's: frames are its `[frame_start, +480)`, and after the
    stream dies and is reopened the timeline goes on where it was (no restart at 0), so a
    segmenter reading that ring by sample index finds each frame there."""
    fake = fake_sd(rate=16000, channels=1)
    mic = MicSource()
    await asyncio.wait_for(mic.start(), TIMEOUT)
    fake.streams[0].feed([np.full((480, 1), 1, np.int16)] * 3)
    before = await collect(mic, 3)
    fake.streams[0].die()
    with pytest.raises(AudioDeviceError):
        await asyncio.wait_for(anext(mic), TIMEOUT)
    await asyncio.wait_for(mic.start(), TIMEOUT)
    fake.streams[1].feed([np.full((480, 1), 2, np.int16)] * 2)
    after = await collect(mic, 2)
    assert mic.frame_start == 4 * 480
    np.testing.assert_array_equal(mic.ring.read(0, 5 * 480), np.concatenate(before + after))
    await mic.close()


async def test_utterances_of_an_array_are_its_own_samples_not_an_int16_copy() -> None:
    """A file's frames go to the VAD as int16, but its utterances are read from the audio as
    given (the source's history): no float -> int16 -> float round trip."""
    from moonshine_live.segment.vad import Segmenter, Utterance, VadConfig

    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) + 1e-6).astype(np.float32)
    audio = np.concatenate([np.zeros(8000, np.float32), tone, np.zeros(16000, np.float32)])
    source = ArraySource(audio)
    segmenter = Segmenter(
        VadConfig(), is_speech=lambda f: int(np.abs(f).max()) > 1000, history=source.history
    )
    utterances = []
    async with source:
        async for frame in source:
            events = segmenter.process(frame, source.frame_start)
            utterances += [e for e in events if isinstance(e, Utterance)]
    (utterance,) = utterances
    expected = audio[utterance.start_sample : utterance.end_sample]
    np.testing.assert_array_equal(utterance.audio, expected)
    assert not np.array_equal(expected, int16_to_float32(float32_to_int16(expected)))
