"""Long test streams for the segment benchmark: spoken items with gaps, their true speech spans,
and the streams as heard in each noise at an SNR.

Why: a segmenter is judged on what it does between commands as much as on the commands, so
it needs minutes of audio with silence and noise around known speech, not one clip at a time.
Items are commands (tests/speech.py COMMAND_PHRASES) and chatter (benchmarks/commands.py
NON_COMMANDS) in the command benchmark's voices and speeds, each trimmed to its speech and
brought to a level near `StreamConfig.speech_dbfs`; some commands are said in two parts with a
short pause inside, and still count as one item. Everything is drawn from the seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from commands import (
    BABBLE_TALKERS,
    NON_COMMANDS,
    Condition,
    Voice,
    babble_talkers,
    seed_of,
    speakers,
)
from room_noise import room_noise
from speech import COMMAND_PHRASES, active_power, mix_at_snr, tts_wav

from moonshine_live.capture.audio import SAMPLE_RATE, load_audio

TRIM_BELOW_DB = 45.0
"""A clip's leading and trailing 10 ms frames this far below its loudest are not speech."""
_TRIM_FRAME = SAMPLE_RATE // 100  # 10 ms
PAUSE_MIN_WORDS = 3
"""Only commands of this many words or more are said with a pause inside."""


@dataclass(frozen=True)
class StreamConfig:
    """How the speech streams are laid out."""

    length_s: float = 90.0
    """Length of each stream (seconds)."""
    gap_s: tuple[float, float] = (1.0, 4.0)
    """Range of the silence between two items, and before the first (seconds)."""
    pause_s: tuple[float, float] = (0.3, 0.6)
    """Range of a pause inside a command said in two parts (seconds)."""
    pause_share: float = 0.15
    """Share of the commands (of PAUSE_MIN_WORDS or more) said with a pause inside."""
    command_share: float = 0.6
    """Share of the items that are commands; the rest is chatter."""
    speech_dbfs: float = -24.0
    """Active speech power of the streams (dBFS, pauses left out): a voice into a desk mic.
    Noise at SNR s lies at speech_dbfs - s (mean power); noise-only streams use this too."""
    level_spread_db: float = 3.0
    """Each item's level is drawn within +- this of `speech_dbfs` (dB)."""

    def __post_init__(self) -> None:
        if self.length_s < 2 * self.gap_s[1] + 1:
            raise ValueError(f"StreamConfig.length_s must be >= {2 * self.gap_s[1] + 1} s")
        if not 0.0 <= self.pause_share <= 1.0 or not 0.0 <= self.command_share <= 1.0:
            raise ValueError("StreamConfig.pause_share and command_share must be in [0, 1]")


@dataclass(frozen=True)
class Item:
    """One spoken item of a stream and where its speech lies: the ground truth."""

    text: str
    kind: str
    """"command" or "chatter"."""
    voice: str
    start: int
    """First sample of its speech on the stream's timeline."""
    end: int
    """One past its last sample of speech (its inner pause, if any, lies within)."""
    pause_s: float = 0.0
    """The pause inside (seconds; 0: said in one go)."""


@dataclass(frozen=True)
class Stream:
    """Clean speech and silence, float32 shape (T,), with its items in order."""

    name: str
    audio: np.ndarray
    items: tuple[Item, ...]
    speech_power: float
    """Active power of its speech (`active_power`), what an SNR is measured over."""

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def trimmed(audio: np.ndarray) -> np.ndarray:
    """`audio` without the leading and trailing silence the synthesizer left around it."""
    padded = np.pad(audio, (0, -len(audio) % _TRIM_FRAME))
    power = np.square(padded.reshape(-1, _TRIM_FRAME), dtype=np.float64).mean(axis=1)
    loud = np.nonzero(power >= power.max() * 10 ** (-TRIM_BELOW_DB / 10))[0]
    return audio[loud[0] * _TRIM_FRAME : min(len(audio), (loud[-1] + 1) * _TRIM_FRAME)]


def said(text: str, voice: Voice, speed: int) -> np.ndarray:
    """`text` in `voice` at `speed` words per minute, trimmed to its speech."""
    return trimmed(load_audio(tts_wav(text, voice.engine, variant=voice.name, speed=speed)))


class StreamMaker:
    """Builds the speech streams one after the other; voices take turns across all of them."""

    def __init__(self, config: StreamConfig, pool: list[Voice], seed: int) -> None:
        self.config = config
        self.seed = seed
        self._speakers: Iterator[tuple[Voice, int]] = speakers(pool)

    def stream(self, index: int) -> Stream:
        """Stream `index`: a gap, then items and gaps up to `length_s` (the last gap at least
        `gap_s[0]`)."""
        cfg = self.config
        rng = np.random.default_rng(seed_of("segments", str(self.seed), str(index)))
        length = round(cfg.length_s * SAMPLE_RATE)
        audio = np.zeros(length, dtype=np.float32)
        items: list[Item] = []
        position = self._gap(rng)
        while True:
            item, clip = self._item(rng, position)
            if item.end + round(cfg.gap_s[0] * SAMPLE_RATE) > length:
                break
            audio[item.start : item.end] = clip
            items.append(item)
            position = item.end + self._gap(rng)
        power = active_power(audio) if items else 0.0
        return Stream(f"stream{index}", audio, tuple(items), power)

    def _gap(self, rng: np.random.Generator) -> int:
        return round(rng.uniform(*self.config.gap_s) * SAMPLE_RATE)

    def _item(self, rng: np.random.Generator, start: int) -> tuple[Item, np.ndarray]:
        cfg = self.config
        voice, speed = next(self._speakers)
        is_command = rng.random() < cfg.command_share
        texts = COMMAND_PHRASES if is_command else NON_COMMANDS
        text = texts[rng.integers(len(texts))]
        words = text.split()
        paused = is_command and len(words) >= PAUSE_MIN_WORDS and rng.random() < cfg.pause_share
        pause_s = round(float(rng.uniform(*cfg.pause_s)), 2) if paused else 0.0
        if paused:
            half = len(words) // 2
            first, second = (said(" ".join(w), voice, speed) for w in (words[:half], words[half:]))
            silence = np.zeros(round(pause_s * SAMPLE_RATE), dtype=np.float32)
            clip = np.concatenate([first, silence, second])
        else:
            clip = said(text, voice, speed)
        level = cfg.speech_dbfs + rng.uniform(-cfg.level_spread_db, cfg.level_spread_db)
        clip = clip * np.float32(np.sqrt(10 ** (level / 10) / active_power(clip)))
        kind = "command" if is_command else "chatter"
        return Item(text, kind, voice.name, start, start + len(clip), pause_s), clip


def noise_only(name: str, length_s: float) -> Stream:
    """A stream with no speech at all (digital silence until noise is added)."""
    return Stream(name, np.zeros(round(length_s * SAMPLE_RATE), dtype=np.float32), (), 0.0)


class Mixer:
    """Streams as heard in a condition: the condition's noise, drawn from the stream's name and
    the seed (the same noise at every SNR, only its level changes), at the SNR over the stream's
    speech power (over `speech_dbfs` for a stream without speech)."""

    def __init__(self, config: StreamConfig, pool: list[Voice], seed: int) -> None:
        self.reference_power = 10 ** (config.speech_dbfs / 10)
        self.seed = seed
        self._pool = pool
        self._talkers: list[Path] | None = None
        self._last: tuple[tuple[str, str], np.ndarray] | None = None
        """The last noise made, by (stream, kind): the SNRs of a noise come one after the other."""

    def talkers(self, rng: np.random.Generator) -> list[Path]:
        """BABBLE_TALKERS of the command benchmark's babble clips (rendered once, when needed)."""
        if self._talkers is None:
            self._talkers = [path for _, path in babble_talkers(self._pool)]
        picks = rng.choice(len(self._talkers), min(BABBLE_TALKERS, len(self._talkers)), False)
        return [self._talkers[i] for i in sorted(picks)]

    def __call__(self, stream: Stream, condition: Condition) -> np.ndarray:
        if condition.noise is None or condition.snr_db is None:
            return stream.audio
        power = stream.speech_power or self.reference_power
        sound = self.noise(stream, condition.noise)
        return mix_at_snr(stream.audio, sound, condition.snr_db, speech_power=power)

    def noise(self, stream: Stream, kind: str) -> np.ndarray:
        """The unit-RMS noise `kind` for `stream`, shape (T,), kept for the next SNR."""
        key = (stream.name, kind)
        if self._last is None or self._last[0] != key:
            seed = seed_of("segments-noise", str(self.seed), kind, stream.name)
            rng = np.random.default_rng(seed)
            talkers = self.talkers(rng) if kind == "babble" else []
            self._last = key, room_noise(kind, len(stream.audio), seed, talkers)
        return self._last[1]


def conditions(noises: list[str], snrs: list[float]) -> list[Condition]:
    """Clean, then each noise at each SNR (noise-major, SNRs as given)."""
    return [Condition(), *(Condition(n, s) for n, s in itertools.product(noises, snrs))]
