"""The package's one internal audio format, and conversion to it at the edges.

Everything past this module is float32 mono at 16 kHz in [-1, 1] (or int16 frames for webrtcvad);
files and caller arrays in other rates, channel counts or dtypes are converted here, once.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import soundfile
import soxr

from ..errors import AudioFormatError

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # hertz; Moonshine's input rate, and one of the four webrtcvad accepts
FRAME_MS = 30  # webrtcvad takes 10, 20 or 30 ms frames; 30 ms gives the steadiest decisions
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 480 samples per webrtcvad frame
SAMPLE_BYTES = 2  # int16 PCM, the only sample format webrtcvad accepts
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_BYTES  # 960 bytes per webrtcvad frame

_INT16_SCALE = 32768.0  # int16 full scale: -32768 maps to exactly -1.0
_RESAMPLE_QUALITY = "HQ"  # soxr "high quality"; VHQ costs more and gains nothing for speech
_MAX_CHANNELS = 32  # more "channels" than this means a [channels, samples] array was passed
_MAX_FLOAT_PEAK = 8.0  # a float peak above this is int16-scaled audio, not clipping overshoot
_ACCEPTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int16))

# split_at_pauses: energy is measured per 10 ms hop, then averaged over 100 ms so a cut picks a
# real pause between words rather than the short closure of a stop consonant inside one.
_PAUSE_HOP_SAMPLES = SAMPLE_RATE // 100  # 10 ms
_PAUSE_WINDOW_HOPS = 10  # 100 ms
_NEAR_MIN_FACTOR = 2.0  # pauses within 3 dB of the quietest count as equally good; take the latest
_ENERGY_FLOOR = 1e-10  # mean square of -100 dBFS: "digital silence" for tie-breaking
_MAX_LEAD_HOPS = 25  # cut at most 250 ms before the end of a quiet stretch
_MIN_MAX_CHUNK_S = 0.1  # split_at_pauses needs room for a few hops per chunk


def int16_to_float32(audio: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 in [-1, 1)."""
    return np.asarray(audio, dtype=np.int16).astype(np.float32) / np.float32(_INT16_SCALE)


def float32_to_int16(audio: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int16 PCM, clipping out-of-range samples.

    Scales by 32768 so int16 -> float32 -> int16 round-trips exactly.
    """
    scaled = np.rint(np.asarray(audio, dtype=np.float32) * np.float32(_INT16_SCALE))
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def load_audio(path: str | Path) -> np.ndarray:
    """Read any file libsndfile reads (WAV, FLAC, OGG, ...) as float32 mono 16 kHz, shape (T,)."""
    path = Path(path)
    if not path.is_file():
        raise AudioFormatError(f"{path}: audio file not found")
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioFormatError(f"{path}: cannot read audio: {error}") from error
    _LOGGER.debug("Read %s: %d frames, %d channels, %d Hz", path, *data.shape, rate)
    return validate_audio(data, rate, name=str(path))


def validate_audio(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, *, name: str = "audio"
) -> np.ndarray:
    """Check and convert caller audio to a new contiguous float32 mono 16 kHz array, shape (T,).

    Accepts float32/float64 in [-1, 1] or int16, shaped (T,) or (T, channels); channels are
    averaged and other rates resampled. Errors name `name` (a file path or argument name).
    """
    array = np.asarray(audio)
    _check_shape(array, name)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise AudioFormatError(f"{name}: sample_rate must be an int in hertz, got {sample_rate!r}")
    if sample_rate <= 0:
        raise AudioFormatError(f"{name}: sample_rate must be positive, got {sample_rate} Hz")
    samples = _to_float32(array, name)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    if sample_rate != SAMPLE_RATE:
        samples = soxr.resample(samples, sample_rate, SAMPLE_RATE, quality=_RESAMPLE_QUALITY)
    # Resampling overshoots a little on full-scale input; clipping keeps the [-1, 1] promise.
    return np.ascontiguousarray(np.clip(samples, -1.0, 1.0), dtype=np.float32)


def _check_shape(array: np.ndarray, name: str) -> None:
    """Reject arrays that are not (T,) or (T, channels), or hold no samples."""
    if array.ndim not in (1, 2):
        raise AudioFormatError(
            f"{name}: expected shape (samples,) or (samples, channels), got {array.shape}"
        )
    if array.ndim == 2 and array.shape[1] > _MAX_CHANNELS:
        raise AudioFormatError(
            f"{name}: shape {array.shape} has {array.shape[1]} channels; "
            "expected (samples, channels) - transpose a (channels, samples) array"
        )
    if array.size == 0:
        raise AudioFormatError(f"{name}: audio is empty (0 samples)")


def _to_float32(array: np.ndarray, name: str) -> np.ndarray:
    """int16 or float array -> float32, rejecting other dtypes, NaN/inf and unscaled floats."""
    if array.dtype not in _ACCEPTED_DTYPES:
        accepted = ", ".join(str(dtype) for dtype in _ACCEPTED_DTYPES)
        raise AudioFormatError(f"{name}: dtype {array.dtype} is not one of {accepted}")
    if array.dtype == np.int16:
        return int16_to_float32(array)
    samples = array.astype(np.float32)
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioFormatError(f"{name}: {bad} samples are NaN or infinite")
    peak = float(np.abs(samples).max())
    if peak > _MAX_FLOAT_PEAK:
        raise AudioFormatError(
            f"{name}: float samples peak at {peak:g}, expected [-1, 1]; "
            "int16-scaled values? divide by 32768 or pass an int16 array"
        )
    if peak > 1.0:
        _LOGGER.warning("%s: float samples peak at %.3f; clipping to [-1, 1]", name, peak)
    return samples


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV; float input in [-1, 1] is clipped, int16 is written as is.

    `audio` is shaped (T,) or (T, channels).
    """
    array = np.asarray(audio)
    if array.ndim not in (1, 2):
        raise AudioFormatError(f"{path}: cannot write audio of shape {array.shape}")
    if sample_rate <= 0:
        raise AudioFormatError(f"{path}: sample_rate must be positive, got {sample_rate} Hz")
    pcm = array if array.dtype == np.int16 else float32_to_int16(array)
    try:
        soundfile.write(Path(path), pcm, sample_rate, subtype="PCM_16", format="WAV")
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioFormatError(f"{path}: cannot write WAV: {error}") from error


def is_silent(audio: np.ndarray, threshold_dbfs: float = -60.0) -> bool:
    """True when the RMS level of the whole array is below `threshold_dbfs` (or it is empty).

    Lets callers skip chunks of `split_at_pauses` that hold no speech; int16 is scaled first.
    """
    array = np.asarray(audio)
    if array.size == 0:
        return True
    samples = int16_to_float32(array) if array.dtype == np.int16 else array.astype(np.float64)
    mean_square = float(np.mean(np.square(samples, dtype=np.float64)))
    if mean_square <= 0.0:
        return True
    return bool(10.0 * np.log10(mean_square) < threshold_dbfs)


def split_at_pauses(
    audio: np.ndarray, max_chunk_s: float = 20.0, min_chunk_s: float = 2.0
) -> list[tuple[int, int]]:
    """Split long audio into [start, end) sample ranges of at most `max_chunk_s`, cut in pauses.

    The ranges are in order and cover every sample exactly once. Each cut lies between
    `min_chunk_s` and `max_chunk_s` after the previous one, at the quietest 100 ms found there
    (the latest one when several are about as quiet, so chunks stay long and few).
    `audio` is shaped (T,) at 16 kHz; audio up to `max_chunk_s` long is one chunk.
    """
    array = np.asarray(audio)
    _check_split_args(array, max_chunk_s, min_chunk_s)
    total = len(array)
    max_samples = int(max_chunk_s * SAMPLE_RATE)
    if total <= max_samples:
        return [(0, total)] if total else []
    scores = _pause_scores(array)
    max_hops = max_samples // _PAUSE_HOP_SAMPLES
    min_hops = int(np.ceil(min_chunk_s * SAMPLE_RATE / _PAUSE_HOP_SAMPLES))
    min_hops = min(max(1, min_hops), max_hops)
    total_hops = total // _PAUSE_HOP_SAMPLES
    cuts = [0]  # in hops; a chunk ending at a hop boundary is never longer than max_samples
    while total - cuts[-1] * _PAUSE_HOP_SAMPLES > max_samples:
        start = cuts[-1]
        low = start + min_hops
        # Leave at least min_chunk_s for the last chunk when the rest allows it.
        high = min(start + max_hops, total_hops - min_hops)
        if high < low:
            high = start + max_hops
        cuts.append(_quietest_boundary(scores, low, high))
    bounds = [cut * _PAUSE_HOP_SAMPLES for cut in cuts] + [total]
    return list(itertools.pairwise(bounds))


def _check_split_args(array: np.ndarray, max_chunk_s: float, min_chunk_s: float) -> None:
    if array.ndim != 1:
        raise AudioFormatError(f"split_at_pauses expects shape (samples,), got {array.shape}")
    if not max_chunk_s >= _MIN_MAX_CHUNK_S:  # `not >=` also rejects NaN
        raise ValueError(f"max_chunk_s must be at least {_MIN_MAX_CHUNK_S} s, got {max_chunk_s}")
    if not 0.0 <= min_chunk_s < max_chunk_s:
        raise ValueError(f"min_chunk_s must be in [0, max_chunk_s), got {min_chunk_s}")


def _pause_scores(audio: np.ndarray) -> np.ndarray:
    """Mean square energy of the 100 ms around each 10 ms hop boundary, shape (hops + 1,)."""
    hops = len(audio) // _PAUSE_HOP_SAMPLES
    framed = audio[: hops * _PAUSE_HOP_SAMPLES].reshape(hops, _PAUSE_HOP_SAMPLES)
    framed = framed.astype(np.float32, copy=False)
    energy = np.einsum("ij,ij->i", framed, framed, dtype=np.float64) / _PAUSE_HOP_SAMPLES
    cumulative = np.concatenate(([0.0], np.cumsum(energy)))
    boundaries = np.arange(hops + 1)
    half = _PAUSE_WINDOW_HOPS // 2
    left = np.maximum(boundaries - half, 0)
    right = np.minimum(boundaries + half, hops)
    return (cumulative[right] - cumulative[left]) / np.maximum(right - left, 1)


def _quietest_boundary(scores: np.ndarray, low: int, high: int) -> int:
    """Hop boundary in [low, high] at the middle of the latest near-quietest stretch."""
    window = scores[low : high + 1]
    threshold = window.min() * _NEAR_MIN_FACTOR + _ENERGY_FLOOR
    quiet = window <= threshold
    last = int(np.flatnonzero(quiet)[-1])
    loud_before = np.flatnonzero(~quiet[:last])
    first = int(loud_before[-1]) + 1 if loud_before.size else 0
    # The middle of the quiet stretch, but close to its end when it is long (uniform silence or
    # noise), so chunks stay near max_chunk_s while the next chunk still starts with some pause.
    return low + max((first + last) // 2, last - _MAX_LEAD_HOPS)
