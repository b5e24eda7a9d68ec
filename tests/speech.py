"""Synthetic speech for tests: voice commands rendered with espeak-ng and flite, cached as WAVs.

Tests need real speech without shipping recordings; these Debian synthesizers give several
distinct voices. Clips are cached under GENERATED_DIR/tts, keyed by engine, voice, speed and text.
Missing tools skip the test on a user machine and fail it under CI=true (`conftest.require`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from conftest import GENERATED_DIR, require, require_tool

from moonshine_live.capture.audio import SAMPLE_RATE, load_audio

_LOGGER = logging.getLogger(__name__)

TTS_DIR = GENERATED_DIR / "tts"
_CACHE_VERSION = "1"  # bump to re-render every cached clip after changing the recipe
_TIMEOUT_S = 60
ESPEAK_VOICES = ("en-us", "en-us+m3", "en-us+f3", "en-gb", "en-us+f2")
FLITE_VOICES = ("slt", "rms", "awb", "kal16")  # awb_time and kal (8 kHz) left out on purpose
_DEFAULT_WPM = 175  # espeak-ng's default rate; flite's speed is mapped relative to it

COMMAND_PHRASES: list[str] = [
    "turn on the kitchen lights",
    "turn off the bedroom lights",
    "dim the living room lights",
    "open firefox",
    "open the terminal",
    "close the window",
    "minimize the window",
    "maximize the window",
    "set the volume to forty percent",
    "volume up",
    "mute the sound",
    "next track",
    "previous track",
    "pause the music",
    "play some jazz",
    "scroll down",
    "scroll up",
    "go back",
    "take a screenshot",
    "switch to workspace three",
    "undo that",
    "redo that",
    "copy that",
    "paste it here",
    "select all",
    "save the file",
    "set a timer for five minutes",
    "what time is it",
    "lock the screen",
    "set the thermostat to twenty one degrees",
    "open the garage door",
    "start the vacuum cleaner",
    "new tab",
    "close the tab",
]


def tts_wav(
    text: str, voice: str = "espeak", *, variant: str | None = None, speed: int | None = None
) -> Path:
    """Synthesize `text` into a cached 16 kHz mono 16-bit WAV and return its path.

    `voice` is the engine, "espeak" or "flite". `variant` is an espeak-ng voice ("en-us+f3")
    or a flite voice ("slt"); `speed` is words per minute (approximate for flite).
    """
    if not text.strip():
        raise ValueError("tts_wav needs non-empty text")
    if voice not in ("espeak", "flite"):
        raise ValueError(f"voice must be 'espeak' or 'flite', got {voice!r}")
    sox = require_tool("sox")
    key = "\0".join([_CACHE_VERSION, voice, variant or "", str(speed or ""), text])
    target = TTS_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.wav"
    if target.is_file():
        return target
    TTS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TTS_DIR) as tmp:
        raw = Path(tmp) / "raw.wav"
        if voice == "espeak":
            _run(_espeak_argv(text, raw, variant, speed))
        else:
            _run(_flite_argv(text, raw, variant, speed))
        converted = Path(tmp) / "out.wav"
        # -D: no dither, so the clip is bit-identical on every machine and run.
        _run([sox, "-D", str(raw), "-b", "16", "-c", "1", str(converted), "rate", "-h", "16000"])
        os.replace(converted, target)  # atomic: parallel tests never see half a file
    _LOGGER.debug("Rendered %r with %s/%s -> %s", text, voice, variant, target)
    return target


def _espeak_argv(text: str, out: Path, variant: str | None, speed: int | None) -> list[str]:
    argv = [require_tool("espeak-ng"), "-w", str(out), "-v", variant or "en-us"]
    if speed is not None:
        argv += ["-s", str(speed)]
    return [*argv, "--", text]  # "--": text starting with "-" is not read as an option


def _flite_argv(text: str, out: Path, variant: str | None, speed: int | None) -> list[str]:
    argv = [require_tool("flite"), "-voice", _flite_voice(variant or "slt")]
    if speed is not None:
        argv += ["--setf", f"duration_stretch={_DEFAULT_WPM / speed:.3f}"]
    return [*argv, "-t", text, "-o", str(out)]


def _flite_voice(name: str) -> str:
    require(f"flite voice {name}", name in flite_voices(), f"flite -lv lists {flite_voices()}")
    return name


@functools.cache
def flite_voices() -> tuple[str, ...]:
    """Voices compiled into the installed flite, from `flite -lv`."""
    result = _run([require_tool("flite"), "-lv"])
    return tuple(result.stdout.split(":", 1)[-1].split())


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a tool without a shell; a failure raises with the tool's stderr in the message."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def command_clips(n: int = 24) -> list[tuple[str, Path]]:
    """`n` (phrase, wav) pairs, alternating espeak-ng and flite voices; the same on every run."""
    flite = [name for name in FLITE_VOICES if name in flite_voices()]
    require("a flite voice", bool(flite), f"none of {FLITE_VOICES} in flite -lv")
    clips = []
    for index in range(n):
        phrase = COMMAND_PHRASES[index % len(COMMAND_PHRASES)]
        if index % 2 == 0:
            path = tts_wav(phrase, "espeak", variant=ESPEAK_VOICES[index // 2 % len(ESPEAK_VOICES)])
        else:
            path = tts_wav(phrase, "flite", variant=flite[index // 2 % len(flite)])
        clips.append((phrase, path))
    return clips


def compose(
    parts: list[Path | float],
    noise_db: float | None = None,
    seed: int = 0,
    *,
    noise_color: str = "pink",
) -> np.ndarray:
    """A 16 kHz float32 recording, shape (T,): clips (paths) and gaps (floats, seconds of silence).

    `noise_db` adds "white" or "pink" noise at that RMS level in dBFS (e.g. -50) over the
    whole recording, from `seed`. `composed_spans(parts)` gives where each clip landed.
    """
    pieces = [_part_audio(part) for part in parts]
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    if noise_db is not None and audio.size:
        audio = audio + _noise(audio.size, noise_db, seed, noise_color)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def composed_spans(parts: list[Path | float]) -> list[tuple[int, int]]:
    """[start, end) sample span of each clip (each Path) in `compose(parts)`, in order."""
    spans, position = [], 0
    for part in parts:
        length = len(_part_audio(part))
        if isinstance(part, Path):
            spans.append((position, position + length))
        position += length
    return spans


def _part_audio(part: Path | float) -> np.ndarray:
    if isinstance(part, Path):
        return load_audio(part)
    if part < 0:
        raise ValueError(f"silence gaps must be >= 0 seconds, got {part}")
    return np.zeros(round(part * SAMPLE_RATE), dtype=np.float32)


def _noise(length: int, level_db: float, seed: int, color: str) -> np.ndarray:
    """Gaussian noise with RMS `level_db` dBFS; pink is white shaped to 1/f power in frequency."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(length)
    if color == "pink":
        spectrum = np.fft.rfft(white)
        frequencies = np.arange(len(spectrum), dtype=np.float64)
        frequencies[0] = 1.0  # keep DC finite; its weight is 1 like the lowest bin
        white = np.fft.irfft(spectrum / np.sqrt(frequencies), n=length)
    elif color != "white":
        raise ValueError(f"noise_color must be 'white' or 'pink', got {color!r}")
    rms = float(np.sqrt(np.mean(white**2))) or 1.0
    return (white * (10.0 ** (level_db / 20.0) / rms)).astype(np.float32)
