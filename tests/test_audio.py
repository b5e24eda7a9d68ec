"""Tests for capture.audio: loading, validation, WAV writing and pause-based splitting."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from moonshine_live.capture.audio import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    float32_to_int16,
    int16_to_float32,
    is_silent,
    load_audio,
    split_at_pauses,
    validate_audio,
    write_wav,
)
from moonshine_live.errors import AudioFormatError

TONE_HZ = 1000.0


def sine(rate: int, seconds: float = 1.0, hz: float = TONE_HZ, amplitude: float = 0.5):
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def dominant_hz(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


def test_constants_describe_a_webrtcvad_frame():
    assert FRAME_SAMPLES == 480
    assert FRAME_BYTES == 960


def test_int16_float32_round_trip_and_clipping():
    pcm = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    as_float = int16_to_float32(pcm)
    assert as_float.dtype == np.float32
    assert as_float[0] == -1.0
    np.testing.assert_array_equal(float32_to_int16(as_float), pcm)
    clipped = float32_to_int16(np.array([-3.0, 1.5], dtype=np.float32))
    np.testing.assert_array_equal(clipped, [-32768, 32767])


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100])
def test_load_wav_resamples_to_16k_keeping_the_tone(tmp_path: Path, rate: int):
    path = tmp_path / f"tone_{rate}.wav"
    soundfile.write(path, sine(rate, 2.0), rate, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.dtype == np.float32
    assert audio.ndim == 1 and audio.flags.c_contiguous
    assert abs(len(audio) - 2 * SAMPLE_RATE) <= 2
    assert abs(dominant_hz(audio) - TONE_HZ) < 5
    assert 0.45 < np.abs(audio).max() <= 0.55


def test_load_stereo_mixes_down_by_mean(tmp_path: Path):
    left = sine(SAMPLE_RATE)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), left / 2, atol=1e-6)


@pytest.mark.parametrize(
    ("fmt", "suffix", "subtype"), [("FLAC", "flac", "PCM_16"), ("OGG", "ogg", "VORBIS")]
)
def test_load_compressed_formats(tmp_path: Path, fmt: str, suffix: str, subtype: str):
    rate = 44100
    t = np.arange(rate * 2) / rate
    chirp = (0.4 * np.sin(2 * np.pi * (300 * t + 200 * t**2))).astype(np.float32)  # 300..1100 Hz
    stereo = np.stack([chirp, chirp], axis=1)
    path = tmp_path / f"chirp.{suffix}"
    soundfile.write(path, stereo, rate, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert abs(len(audio) - 2 * SAMPLE_RATE) <= 2
    first, last = audio[: SAMPLE_RATE // 4], audio[-SAMPLE_RATE // 4 :]
    assert 300 <= dominant_hz(first) <= 420
    assert 980 <= dominant_hz(last) <= 1100


def test_load_missing_file_names_it(tmp_path: Path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioFormatError, match=r"nope\.wav.*not found"):
        load_audio(path)


def test_load_corrupt_file_names_it(tmp_path: Path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(256)))
    with pytest.raises(AudioFormatError, match=r"corrupt\.wav"):
        load_audio(path)


def test_load_empty_file_names_it(tmp_path: Path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(AudioFormatError, match=r"empty\.wav.*empty \(0 samples\)"):
        load_audio(path)


def test_load_nan_samples_names_the_file(tmp_path: Path):
    audio = sine(SAMPLE_RATE)
    audio[100] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioFormatError, match=r"nan\.wav.*NaN"):
        load_audio(path)


def test_write_wav_is_16_bit_and_round_trips(tmp_path: Path):
    path = tmp_path / "out.wav"
    audio = sine(SAMPLE_RATE)
    write_wav(path, audio)
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    np.testing.assert_allclose(load_audio(path), audio, atol=1 / 32768)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_validate_float_passes_through_as_new_float32(dtype):
    audio = sine(SAMPLE_RATE).astype(dtype)
    result = validate_audio(audio)
    assert result.dtype == np.float32 and result.flags.c_contiguous
    assert not np.shares_memory(result, audio)
    np.testing.assert_allclose(result, audio, atol=1e-7)


def test_validate_int16_is_scaled():
    result = validate_audio(np.array([16384, -32768], dtype=np.int16))
    np.testing.assert_array_equal(result, [0.5, -1.0])


def test_validate_mixes_down_samples_by_channels():
    audio = np.stack([np.full(100, 0.2), np.full(100, 0.4)], axis=1)
    np.testing.assert_allclose(validate_audio(audio), 0.3, atol=1e-7)


def test_validate_non_contiguous_input():
    audio = sine(SAMPLE_RATE)[::2]
    assert validate_audio(audio).flags.c_contiguous


def test_validate_resamples_an_explicit_other_rate():
    result = validate_audio(sine(48000, 1.0), 48000)
    assert abs(len(result) - SAMPLE_RATE) <= 1
    assert abs(dominant_hz(result) - TONE_HZ) < 5


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros(0, dtype=np.float32), SAMPLE_RATE, r"empty \(0 samples\)"),
        (np.array([0.0, np.nan], dtype=np.float32), SAMPLE_RATE, "NaN or infinite"),
        (np.array([0.0, np.inf]), SAMPLE_RATE, "NaN or infinite"),
        (np.zeros((2, 2, 2), dtype=np.float32), SAMPLE_RATE, r"expected shape"),
        (np.zeros((2, 16000), dtype=np.float32), SAMPLE_RATE, "transpose"),
        (np.zeros(10, dtype=np.int32), SAMPLE_RATE, "dtype int32"),
        (np.full(10, 1000.0, dtype=np.float32), SAMPLE_RATE, "divide by 32768"),
        (np.zeros(10, dtype=np.float32), 0, "sample_rate must be positive"),
        (np.zeros(10, dtype=np.float32), -16000, "sample_rate must be positive"),
        (np.zeros(10, dtype=np.float32), 16000.0, "sample_rate must be an int"),
    ],
)
def test_validate_rejects_bad_audio(audio, rate, message):
    with pytest.raises(AudioFormatError, match=f"mic: .*{message}"):
        validate_audio(audio, rate, name="mic")


def test_validate_clips_slight_overshoot():
    result = validate_audio(np.array([1.2, -1.5], dtype=np.float32))
    np.testing.assert_array_equal(result, [1.0, -1.0])


def test_is_silent():
    assert is_silent(np.zeros(SAMPLE_RATE, dtype=np.float32))
    assert is_silent(np.zeros(0, dtype=np.float32))
    assert is_silent(np.full(SAMPLE_RATE, 1e-4, dtype=np.float32))  # -80 dBFS
    assert not is_silent(sine(SAMPLE_RATE, amplitude=0.01))  # about -43 dBFS
    assert not is_silent(float32_to_int16(sine(SAMPLE_RATE)))
    assert is_silent(np.full(10, 0.01, dtype=np.float32), threshold_dbfs=-41) is False  # -40 dBFS
    assert is_silent(np.full(10, 0.01, dtype=np.float32), threshold_dbfs=-39) is True


# ---- split_at_pauses -------------------------------------------------------------------------


def speech_like(seconds: float, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Tone bursts ("words", 0.2-4 s) separated by pauses (0.25-1.5 s) over a -70 dBFS noise floor.

    Returns the audio and the [start, end) spans of the pauses.
    """
    rng = np.random.default_rng(seed)
    total = round(seconds * SAMPLE_RATE)
    audio = rng.normal(0.0, 10 ** (-70 / 20), total).astype(np.float32)
    pauses, position = [], 0
    while position < total:
        word = round(rng.uniform(0.2, 4.0) * SAMPLE_RATE)
        end = min(total, position + word)
        t = np.arange(end - position) / SAMPLE_RATE
        hz = rng.uniform(120, 900)
        audio[position:end] += (rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * hz * t)).astype(
            np.float32
        )
        gap = round(rng.uniform(0.25, 1.5) * SAMPLE_RATE)
        if end < total:
            pauses.append((end, min(total, end + gap)))
        position = end + gap
    return audio, pauses


def assert_covering(chunks: list[tuple[int, int]], total: int, max_samples: int) -> None:
    assert chunks[0][0] == 0 and chunks[-1][1] == total
    for (_, end), (start, _) in itertools.pairwise(chunks):
        assert end == start
    for start, end in chunks:
        assert 0 < end - start <= max_samples


def test_split_short_audio_is_one_chunk():
    audio = np.zeros(5 * SAMPLE_RATE, dtype=np.float32)
    assert split_at_pauses(audio) == [(0, len(audio))]
    assert split_at_pauses(audio[: 20 * SAMPLE_RATE]) == [(0, len(audio))]
    assert split_at_pauses(np.zeros(0, dtype=np.float32)) == []


def test_split_ten_minutes_cuts_only_in_pauses():
    audio, pauses = speech_like(600.0)
    chunks = split_at_pauses(audio, max_chunk_s=20.0, min_chunk_s=2.0)
    assert_covering(chunks, len(audio), 20 * SAMPLE_RATE)
    assert len(chunks) >= 30
    starts = np.array([start for start, _ in pauses])
    for _, cut in chunks[:-1]:
        index = np.searchsorted(starts, cut, side="right") - 1
        pause_start, pause_end = pauses[index]
        assert pause_start <= cut < pause_end, f"cut at {cut / SAMPLE_RATE:.2f} s is not in a pause"


def test_split_prefers_the_longest_chunk_among_equal_pauses():
    tone = sine(SAMPLE_RATE, 4.0)
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    audio = np.concatenate([tone, gap, tone, gap, tone, gap, tone])  # pauses at 4, 8.5, 13 s
    first_cut = split_at_pauses(audio, max_chunk_s=15.0)[0][1]
    assert 13 * SAMPLE_RATE <= first_cut < 13.5 * SAMPLE_RATE


def test_split_long_silence_gives_nearly_full_chunks():
    audio = np.zeros(120 * SAMPLE_RATE, dtype=np.float32)
    chunks = split_at_pauses(audio, max_chunk_s=20.0)
    assert_covering(chunks, len(audio), 20 * SAMPLE_RATE)
    # The one before last may end early to leave the last chunk min_chunk_s long.
    assert all(end - start >= 19.5 * SAMPLE_RATE for start, end in chunks[:-2])
    assert chunks[-1][1] - chunks[-1][0] >= 2 * SAMPLE_RATE


def test_split_ten_minutes_is_fast():
    audio, _ = speech_like(600.0, seed=1)
    split_at_pauses(audio)
    started = time.perf_counter()
    split_at_pauses(audio)
    assert time.perf_counter() - started < 0.5


def test_split_rejects_bad_arguments():
    audio = np.zeros(SAMPLE_RATE, dtype=np.float32)
    with pytest.raises(ValueError, match="max_chunk_s"):
        split_at_pauses(audio, max_chunk_s=0.0)
    with pytest.raises(ValueError, match="min_chunk_s"):
        split_at_pauses(audio, max_chunk_s=5.0, min_chunk_s=5.0)
    with pytest.raises(AudioFormatError, match="shape"):
        split_at_pauses(np.zeros((10, 2), dtype=np.float32))


@settings(max_examples=150, deadline=None)
@given(
    seconds=st.floats(0.0, 120.0),
    max_chunk_s=st.floats(0.1, 30.0),
    min_fraction=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
    silent=st.booleans(),
)
def test_split_property_covers_within_bounds(seconds, max_chunk_s, min_fraction, seed, silent):
    total = round(seconds * SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    audio = np.zeros(total, dtype=np.float32) if silent else rng.uniform(-1, 1, total)
    chunks = split_at_pauses(audio, max_chunk_s=max_chunk_s, min_chunk_s=max_chunk_s * min_fraction)
    if total == 0:
        assert chunks == []
        return
    assert_covering(chunks, total, int(max_chunk_s * SAMPLE_RATE))


# ---- test speech helpers (tests/speech.py) -------------------------------------------------


@pytest.mark.needs_tts
@pytest.mark.parametrize(
    ("engine", "variant"), [("espeak", None), ("flite", "slt"), ("flite", "rms")]
)
def test_tts_wav_is_16k_speech(engine: str, variant: str | None):
    from speech import tts_wav

    path = tts_wav("turn on the kitchen lights", engine, variant=variant)
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    audio = load_audio(path)
    assert 0.5 * SAMPLE_RATE < len(audio) < 5 * SAMPLE_RATE
    assert not is_silent(audio)
    assert tts_wav("turn on the kitchen lights", engine, variant=variant) == path  # cached


@pytest.mark.needs_tts
def test_tts_speed_changes_duration():
    from speech import tts_wav

    slow = load_audio(tts_wav("scroll down", "espeak", speed=120))
    fast = load_audio(tts_wav("scroll down", "espeak", speed=260))
    assert len(slow) > 1.4 * len(fast)


@pytest.mark.needs_tts
def test_command_clips_and_compose():
    from speech import COMMAND_PHRASES, command_clips, compose, composed_spans

    assert len(COMMAND_PHRASES) >= 30
    assert all(phrase.replace(" ", "").isalpha() for phrase in COMMAND_PHRASES)
    clips = command_clips(4)
    assert [phrase for phrase, _ in clips] == COMMAND_PHRASES[:4]
    assert len({path for _, path in clips}) == 4
    parts = [0.5, clips[0][1], 1.0, clips[1][1], 0.25]
    audio = compose(parts, noise_db=-50.0)
    spans = composed_spans(parts)
    assert audio.dtype == np.float32 and len(audio) == spans[-1][1] + SAMPLE_RATE // 4
    assert spans[0][0] == SAMPLE_RATE // 2
    gap = audio[spans[0][1] : spans[1][0]]
    assert -53 < 10 * np.log10(np.mean(gap.astype(np.float64) ** 2)) < -47
    np.testing.assert_array_equal(audio, compose(parts, noise_db=-50.0))
