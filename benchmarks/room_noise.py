"""Room noises for the segment benchmark, generated from a seed: fan hum, music, clatter, doors.

Why: webrtcvad fails differently on steady and on sudden sounds, so the benchmark needs both
kinds, and recordings cannot ship with the repo. The colours of noise and babble come from
tests/speech.py (`noise`, `babble`); this module adds the rest and `room_noise` names them all.
Every noise is float32, unit RMS over its whole length (the mean power `mix_at_snr` scales), and
the same for the same seed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from speech import babble, noise

from moonshine_live.capture.audio import SAMPLE_RATE

STATIONARY = ("white", "pink", "brown", "fan")
NON_STATIONARY = ("babble", "music", "clatter", "door")
NOISE_KINDS = STATIONARY + NON_STATIONARY

FAN_BLADE_HZ = (90.0, 140.0)
"""Range of a fan's blade-pass frequency, the hum's fundamental (hertz)."""
FAN_HARMONICS = 6
FAN_AIR_CUTOFF_HZ = 500.0
"""Corner of the low-pass on the fan's air noise (hertz)."""
MUSIC_BPM = (84, 132)
"""Range of the music's tempo (beats per minute); four beats to a chord."""
CLATTER_PER_S = 1.2
"""Mean rate of dish clatters (clusters of impacts), per second."""
CLICKS_PER_S = 0.6
"""Mean rate of lone clicks (a switch, a keyboard), per second."""
DOOR_EVERY_S = (4.0, 12.0)
"""Range of the time between two door slams (seconds)."""
_PROGRESSIONS = ((60, 64, 67), (65, 69, 72), (67, 71, 74), (57, 60, 64), (62, 65, 69))
"""The chords music is made of (MIDI note numbers): C, F, G, A minor, D minor."""


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


def unit_rms(audio: np.ndarray) -> np.ndarray:
    """`audio` scaled to RMS 1, float32."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) or 1.0
    return (audio / rms).astype(np.float32)


def lowpass(audio: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """A gentle first-order-like low-pass in the frequency domain (the whole clip at once)."""
    spectrum = np.fft.rfft(audio)
    hertz = np.fft.rfftfreq(len(audio), 1.0 / SAMPLE_RATE)
    return np.fft.irfft(spectrum / np.sqrt(1.0 + (hertz / cutoff_hz) ** 2), n=len(audio))


def add_at(buffer: np.ndarray, sound: np.ndarray, at: int) -> None:
    """Mix `sound` into `buffer` from sample `at`, cut at the buffer's end."""
    end = min(len(buffer), at + len(sound))
    if at < end:
        buffer[at:end] += sound[: end - at]


def damped(hertz: float, decay_s: float, length_s: float, phase: float = 0.0) -> np.ndarray:
    """A decaying sinusoid: one resonance of something struck."""
    t = np.arange(int(length_s * SAMPLE_RATE)) / SAMPLE_RATE
    return np.sin(2 * np.pi * hertz * t + phase) * np.exp(-t / decay_s)


def burst(rng: np.random.Generator, decay_s: float, length_s: float) -> np.ndarray:
    """White noise under a fast exponential decay: the broadband crack of an impact."""
    t = np.arange(int(length_s * SAMPLE_RATE)) / SAMPLE_RATE
    return rng.standard_normal(len(t)) * np.exp(-t / decay_s)


def fan(length: int, seed: int) -> np.ndarray:
    """Fan hum: the blade-pass tone with harmonics (slowly wobbling in pitch and level) over
    low-passed air noise, at about equal power."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / SAMPLE_RATE
    base = rng.uniform(*FAN_BLADE_HZ)
    wobble = 1.0 + 0.004 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t)
    phase = 2 * np.pi * base * np.cumsum(wobble) / SAMPLE_RATE
    hum = sum(
        np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k**1.2 for k in range(1, FAN_HARMONICS + 1)
    )
    hum = hum * (1.0 + 0.15 * np.sin(2 * np.pi * base / 7 * t))  # rotor beat
    air = lowpass(rng.standard_normal(length), FAN_AIR_CUTOFF_HZ)
    return unit_rms(unit_rms(hum) + unit_rms(air))


def note(hertz: float, length_s: float, decay_s: float) -> np.ndarray:
    """A plucked tone: a few harmonics, 5 ms attack, exponential decay."""
    t = np.arange(int(length_s * SAMPLE_RATE)) / SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * h * hertz * t) / h**1.5 for h in range(1, 6) if h * hertz < 7000)
    return tone * np.minimum(1.0, t / 0.005) * np.exp(-t / decay_s)


def music(length: int, seed: int) -> np.ndarray:
    """Music: a chord progression with an eighth-note arpeggio, a bass on beats 1 and 3, a soft
    pad and a hi-hat on the off-beats, at a tempo drawn from MUSIC_BPM."""
    rng = np.random.default_rng(seed)
    beat = int(SAMPLE_RATE * 60 / rng.integers(*MUSIC_BPM))
    out = np.zeros(length)
    order = rng.permutation(len(_PROGRESSIONS))
    for bar, start in enumerate(range(0, length, 4 * beat)):
        chord = _PROGRESSIONS[order[bar % len(order)]]
        for k in range(8):  # arpeggio, eighth notes
            pitch = chord[k % 3] + 12 * (k // 3 % 2)
            add_at(out, 0.5 * note(midi_hz(pitch), 0.6, 0.25), start + k * beat // 2)
        for k in (0, 2):
            add_at(out, 0.8 * note(midi_hz(chord[0] - 24), 1.0, 0.4), start + k * beat)
        for pitch in chord:
            add_at(out, 0.15 * note(midi_hz(pitch), 4 * beat / SAMPLE_RATE, 1.5), start)
        for k in range(4):
            hat = np.diff(burst(rng, 0.015, 0.06), prepend=0.0)  # diff: bright
            add_at(out, 0.2 * hat, start + k * beat + beat // 2)
    return unit_rms(out)


def impact(rng: np.random.Generator, low_hz: float, high_hz: float, decay_s: float) -> np.ndarray:
    """One strike: a short crack plus two to four resonances in [low_hz, high_hz]."""
    length_s = 5 * decay_s
    sound = 0.5 * burst(rng, 0.003, length_s)
    for _ in range(rng.integers(2, 5)):
        hertz = float(np.exp(rng.uniform(np.log(low_hz), np.log(high_hz))))
        sound += damped(hertz, decay_s * rng.uniform(0.5, 1.5), length_s, rng.uniform(0, 6.3))
    return sound


def poisson_times(rng: np.random.Generator, length: int, per_s: float) -> np.ndarray:
    """Sample positions of events at a mean rate of `per_s` (a Poisson process)."""
    count = rng.poisson(per_s * length / SAMPLE_RATE)
    return np.sort(rng.integers(0, length, size=count))


def clatter(length: int, seed: int) -> np.ndarray:
    """Kitchen clatter: clusters of one to four ringing impacts (dishes, cutlery) at random
    times and levels, and lone clicks between them; silence elsewhere."""
    rng = np.random.default_rng(seed)
    out = np.zeros(length)
    for at in poisson_times(rng, length, CLATTER_PER_S):
        offset = 0
        for _ in range(rng.integers(1, 5)):
            level = 10 ** rng.uniform(-0.6, 0.0)
            add_at(out, level * impact(rng, 1000, 6000, rng.uniform(0.02, 0.08)), at + offset)
            offset += int(rng.uniform(0.03, 0.15) * SAMPLE_RATE)
    for at in poisson_times(rng, length, CLICKS_PER_S):
        add_at(out, 10 ** rng.uniform(-0.8, -0.2) * burst(rng, 0.001, 0.006), at)
    return unit_rms(out)


def door(length: int, seed: int) -> np.ndarray:
    """Door slams every DOOR_EVERY_S: a low thump, a crack and a rattle of the frame."""
    rng = np.random.default_rng(seed)
    out = np.zeros(length)
    at = int(rng.uniform(0.5, DOOR_EVERY_S[0]) * SAMPLE_RATE)
    while at < length:
        slam = 1.5 * damped(rng.uniform(50, 120), rng.uniform(0.08, 0.15), 0.8)
        slam[: int(0.4 * SAMPLE_RATE)] += lowpass(burst(rng, 0.04, 0.4), 2000)
        rattle = impact(rng, 300, 900, 0.12)[: int(0.6 * SAMPLE_RATE)]
        slam[: len(rattle)] += 0.3 * rattle
        add_at(out, 10 ** rng.uniform(-0.3, 0.0) * slam, at)
        at += int(rng.uniform(*DOOR_EVERY_S) * SAMPLE_RATE)
    return unit_rms(out)


_GENERATED: dict[str, Callable[[int, int], np.ndarray]] = {
    "fan": fan,
    "music": music,
    "clatter": clatter,
    "door": door,
}


def room_noise(kind: str, length: int, seed: int, talkers: Sequence[Path] = ()) -> np.ndarray:
    """Unit-RMS noise of NOISE_KINDS, shape (length,), from `seed`; babble is `talkers` (TTS
    clips of other voices) talking at once."""
    if kind in ("white", "pink", "brown"):
        return noise(length, kind, seed)
    if kind == "babble":
        return babble(length, talkers, seed)
    if kind not in _GENERATED:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    return _GENERATED[kind](length, seed)
