"""Voice activity segmentation: int16 frames in, `SpeechStarted` / `Utterance` events out.

`Segmenter` is a small resettable state machine fed one frame at a time (the shape of silero's
`VADIterator` and py-webrtcvad's `vad_collector`). Speech starts when `start_frames` of the last
`start_window_frames` frames are voiced, and ends after `hangover_ms` without two voiced frames
in a row (a lone voiced frame, a click, does not hold it open); that asymmetry is the hysteresis.
Each utterance keeps `pre_roll_ms` before the first voiced frame and `post_roll_ms` after the
last one: Moonshine needs a little silence around speech, while long silence on both sides can
make it return nothing (defaults measured on TTS commands, see the VadConfig fields). The audio
lives once, on the capture timeline: in the source's own history (a microphone's ring, a file's
samples; the segmenter only reads) or, for a source without one, in the segmenter's ring, which
it fills. Nothing
grows while someone talks for a long time; an utterance reaching `max_utterance_ms` is cut at the
quietest recent frame. A `Pause` reports, once per pause, that speech has been silent for
`pause_ms` (early commit acts on it). webrtcvad is imported only when no `is_speech` callable is
injected.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from ..capture.audio import SAMPLE_RATE
from ..capture.ringbuffer import RingBuffer
from ..capture.sources import AudioHistory
from ..errors import ConfigError

_LOGGER = logging.getLogger(__name__)

FRAME_MS_CHOICES = (10, 20, 30)  # the frame lengths webrtcvad accepts
_MAX_UTTERANCE_LIMIT_MS = 30_000  # Moonshine is trained on clips up to about 30 s

SpeechDetector = Callable[[np.ndarray], bool]
"""Decides one frame: int16, shape (frame_samples,) -> voiced?"""

UtteranceReason = Literal["silence", "max_length", "end_of_stream", "gap"]


@dataclass(frozen=True)
class VadConfig:
    """How speech is found in the frame stream and how much silence each utterance keeps."""

    aggressiveness: int = 2
    """webrtcvad mode, 0 (keeps most, incl. noise) to 3 (drops most)."""
    frame_ms: int = 30
    """Frame length fed to the VAD (milliseconds): 10, 20 or 30."""
    start_frames: int = 3
    """Voiced frames needed among the last `start_window_frames` to start an utterance."""
    start_window_frames: int = 5
    """Window for `start_frames` (frames)."""
    hangover_ms: int = 300
    """Silence that ends an utterance (milliseconds); lone voiced frames count as silence."""
    pre_roll_ms: int = 150
    """Audio kept before the first voiced frame (milliseconds). Measured on 68 TTS commands
    in pink noise: 0 ms loses commands (Moonshine returns nothing), 100-450 ms are about
    equal, and a second of leading silence makes a third or more come back empty."""
    post_roll_ms: int = 300
    """Audio kept after the last voiced frame (milliseconds), at most `hangover_ms`. More
    trailing silence helps Moonshine: word error 0.33 at 150 ms, 0.30 at 300, 0.24 at 450."""
    min_utterance_ms: int = 150
    """Voiced spans shorter than this (first to last voiced frame) are dropped (milliseconds)."""
    max_utterance_ms: int = 10_000
    """Longer speech is cut into pieces at most this long (milliseconds)."""
    min_speech_dbfs: float = -55.0
    """Frames quieter than this (RMS, dBFS) are silence whatever webrtcvad says: it judges
    spectra, not level, and calls faint steady noise speech often enough to join two commands
    separated by a pause into one utterance. Speech into a working mic is 15-30 dB louder."""
    split_search_ms: int = 1_000
    """A cut for `max_utterance_ms` goes at the quietest frame this recent (milliseconds)."""

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            _fail("aggressiveness", "0, 1, 2 or 3", self.aggressiveness)
        if not -120.0 <= self.min_speech_dbfs <= -10.0:
            _fail("min_speech_dbfs", "[-120, -10]", self.min_speech_dbfs)
        if self.frame_ms not in FRAME_MS_CHOICES:
            _fail("frame_ms", "10, 20 or 30", self.frame_ms)
        if not 1 <= self.start_window_frames <= 100:
            _fail("start_window_frames", "[1, 100]", self.start_window_frames)
        if not 1 <= self.start_frames <= self.start_window_frames:
            _fail("start_frames", "[1, start_window_frames]", self.start_frames)
        if not self.frame_ms <= self.hangover_ms <= 10_000:
            _fail("hangover_ms", "[frame_ms, 10000]", self.hangover_ms)
        if not 0 <= self.post_roll_ms <= self.hangover_ms:
            _fail("post_roll_ms", "[0, hangover_ms]", self.post_roll_ms)
        if not 1_000 <= self.max_utterance_ms <= _MAX_UTTERANCE_LIMIT_MS:
            _fail("max_utterance_ms", f"[1000, {_MAX_UTTERANCE_LIMIT_MS}]", self.max_utterance_ms)
        half = self.max_utterance_ms // 2
        if not 0 <= self.pre_roll_ms <= half:
            _fail("pre_roll_ms", "[0, max_utterance_ms / 2]", self.pre_roll_ms)
        if not self.frame_ms <= self.split_search_ms <= half:
            _fail("split_search_ms", "[frame_ms, max_utterance_ms / 2]", self.split_search_ms)
        if not 0 <= self.min_utterance_ms < self.max_utterance_ms:
            _fail("min_utterance_ms", "[0, max_utterance_ms)", self.min_utterance_ms)

    @property
    def frame_samples(self) -> int:
        return SAMPLE_RATE * self.frame_ms // 1000

    def frames(self, ms: int) -> int:
        """Whole frames in `ms` milliseconds, at least one."""
        return max(1, -(-ms // self.frame_ms))


def _fail(field: str, allowed: str, value: object) -> None:
    raise ConfigError(f"VadConfig.{field} must be in {allowed}, got {value!r}")


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began; its utterance audio will start at `start_sample` (absolute, pre-roll in)."""

    start_sample: int


@dataclass(frozen=True, eq=False)  # eq=False: dataclass equality on an ndarray field is ambiguous
class Utterance:
    """One stretch of speech with its pre- and post-roll, ready for the transcriber."""

    audio: np.ndarray
    """float32 in [-1, 1), shape (end_sample - start_sample,), 16 kHz."""
    start_sample: int
    """Absolute index of audio[0] on the source's timeline."""
    end_sample: int
    reason: UtteranceReason
    """Why it ended: "silence" (hangover), "max_length" (cut, more follows), "end_of_stream"
    (`force_end`), "gap" (the source skipped samples)."""
    post_roll_samples: int = 0
    """Trailing silence kept after the last voiced sample (ended by silence only): the speech
    itself ends at `end_sample - post_roll_samples`."""

    @property
    def start_s(self) -> float:
        return self.start_sample / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end_sample / SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return (self.end_sample - self.start_sample) / SAMPLE_RATE


@dataclass(frozen=True)
class SpeechDropped:
    """A `SpeechStarted` that ended without an utterance: its voiced span was under
    `min_utterance_ms` (a click, a cough)."""

    start_sample: int
    end_sample: int


@dataclass(frozen=True)
class Pause:
    """The utterance in progress has been silent for `pause_ms` (still within the hangover):
    it may be over. Its audio so far is [start_sample, end_sample) of the timeline; the speech
    itself ended at `speech_end_sample`."""

    start_sample: int
    speech_end_sample: int
    end_sample: int


VadEvent = SpeechStarted | Utterance | SpeechDropped | Pause


class _Frame(NamedTuple):
    start: int  # absolute sample index
    voiced: bool
    energy: float  # mean square, int16 units


def webrtc_detector(aggressiveness: int, sample_rate: int = SAMPLE_RATE) -> SpeechDetector:
    """The default `is_speech`: webrtcvad in mode `aggressiveness`, imported here, lazily."""
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)

    def is_speech(frame: np.ndarray) -> bool:
        return vad.is_speech(frame.tobytes(), sample_rate)

    return is_speech


class Segmenter:
    """Frame-at-a-time speech segmenter with hysteresis, pre-roll, hangover and max-length cuts.

    Feed contiguous int16 frames of `config.frame_samples` with `process`; it returns the events
    each frame caused (usually none). Call `force_end` at the end of a stream and `reset` before
    a new one. Not thread-safe: one task feeds it.
    """

    def __init__(
        self,
        config: VadConfig | None = None,
        is_speech: SpeechDetector | None = None,
        *,
        history: AudioHistory | None = None,
        pause_ms: int = 0,
    ) -> None:
        """`history`: the source's audio, where every frame fed already lies (a microphone's
        ring, a file's samples): utterances are read from it, and a ring must hold
        `history_samples` more than the source lets its reader fall behind. None: a ring of
        its own, filled from the frames fed. `pause_ms`: emit a `Pause` when speech has been
        silent this long (0: never)."""
        self.config = config or VadConfig()
        self.pause_ms = pause_ms
        self._is_speech = is_speech or webrtc_detector(self.config.aggressiveness)
        # mean square (int16 units) of a frame at min_speech_dbfs: quieter frames are silence
        self._min_energy = (32768.0 * 10 ** (self.config.min_speech_dbfs / 20)) ** 2
        cfg = self.config
        self._max_samples = SAMPLE_RATE * cfg.max_utterance_ms // 1000
        # One utterance plus two frames of slack: a cut always finds its audio still held.
        if isinstance(history, RingBuffer) and history.capacity < self.history_samples:
            raise ConfigError(
                f"the source's ring holds {history.capacity} samples; the segmenter reads back "
                f"{self.history_samples} (max_utterance_ms {cfg.max_utterance_ms})"
            )
        self.ring = RingBuffer(self.history_samples) if history is None else None
        """The segmenter's own ring, filled from the frames fed, when the source has none."""
        self.history: AudioHistory = self.ring if self.ring is not None else history
        self._window: deque[_Frame] = deque(maxlen=cfg.start_window_frames)
        self._recent: deque[_Frame] = deque(maxlen=cfg.frames(cfg.split_search_ms))
        self._hangover_frames = cfg.frames(cfg.hangover_ms)
        self.reset()

    @property
    def history_samples(self) -> int:
        """How far back the segmenter reads: one utterance and two frames of slack."""
        return self._max_samples + 2 * self.config.frame_samples

    @property
    def started(self) -> bool:
        """Whether the timeline is known: a ring of its own starts at 0, a source's ring where
        the first frame fed lies."""
        return self._position is not None

    @property
    def in_speech(self) -> bool:
        return self._utt_start is not None

    @property
    def last_voiced(self) -> bool:
        """Whether the last frame fed was voiced (False while a hangover is running out)."""
        return self._last_voiced

    @property
    def utterance_start(self) -> int | None:
        """First sample (pre-roll included) of the utterance in progress, None when idle."""
        return self._utt_start

    @property
    def speech_end(self) -> int:
        """End sample of the last confirmed voiced frame (the current or last utterance)."""
        return self._speech_end

    @property
    def silence_ms(self) -> int:
        """Silence since speech was last confirmed in the utterance in progress (0 when idle)."""
        return self._silent_frames * self.config.frame_ms if self.in_speech else 0

    @property
    def post_roll_samples(self) -> int:
        """`VadConfig.post_roll_ms` in samples: the silence an utterance keeps after speech."""
        return SAMPLE_RATE * self.config.post_roll_ms // 1000

    @property
    def closing_end(self) -> int:
        """Where the utterance in progress would end if silence closed it now."""
        return self._speech_end + self.post_roll_samples

    @property
    def position(self) -> int:
        """Absolute sample index the next frame is expected to start at."""
        return self._position or 0

    def reset(self) -> None:
        """Drop any speech in progress; with a ring of its own, restart the timeline at sample 0
        (a source's ring keeps its timeline: the next frame fed says where it is)."""
        if self.ring is not None:
            self.ring.reset()
        # None: a source's history, whose timeline the first frame fed places
        self._position: int | None = 0 if self.ring is not None else None
        self._paused_at = -1  # speech_end of the last Pause: one per pause
        self._window.clear()
        self._recent.clear()
        self._utt_start: int | None = None
        self._silent_frames = 0  # frames since speech was last confirmed
        self._last_voiced = False
        self._speech_start = 0
        self._speech_end = 0
        self._floor = 0  # utterances never reach back before the previous one's end

    def process(self, frame: np.ndarray, start_sample: int | None = None) -> list[VadEvent]:
        """Feed one int16 frame, shape (frame_samples,); return the events it caused.

        `start_sample` is the frame's absolute index when the caller tracks one (a source that
        dropped audio); a jump ahead ends speech in progress with reason "gap".
        """
        frame = self._check_frame(frame)
        events: list[VadEvent] = []
        if self._position is None:  # a source's ring: its timeline starts where it is
            self._position = start_sample if start_sample is not None else 0
        if start_sample is not None and start_sample != self.position:
            events += self._jump(start_sample)
        samples = frame.astype(np.float32)
        energy = float(np.dot(samples, samples)) / len(frame)
        voiced = energy >= self._min_energy and bool(self._is_speech(frame))
        current = _Frame(self.position, voiced, energy)
        if self.ring is not None:
            self.ring.write(frame)
        self._position = self.position + len(frame)
        if self._utt_start is None:
            events += self._listen(current)
        else:
            events += self._follow(current)
        return events + self._pause()

    def _pause(self) -> list[VadEvent]:
        if not self.pause_ms or self._utt_start is None or self.silence_ms < self.pause_ms:
            return []
        if self._speech_end == self._paused_at:
            return []
        self._paused_at = self._speech_end
        return [Pause(self._utt_start, self._speech_end, self.position)]

    def force_end(self) -> list[VadEvent]:
        """End speech in progress now (end of stream); the timeline goes on."""
        return self._finish("end_of_stream") if self.in_speech else []

    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        expected = self.config.frame_samples
        if frame.dtype != np.int16 or frame.shape != (expected,):
            raise ValueError(
                f"Segmenter expects int16 frames of shape ({expected},) "
                f"({self.config.frame_ms} ms at {SAMPLE_RATE} Hz), got {frame.dtype} {frame.shape}"
            )
        return frame

    def _jump(self, start_sample: int) -> list[VadEvent]:
        if start_sample < self.position:
            raise ValueError(
                f"frame start {start_sample} is before the segmenter's position {self.position}"
            )
        events = self._finish("gap") if self.in_speech else []
        _LOGGER.debug("Gap of %d samples at %d", start_sample - self.position, self.position)
        if self.ring is not None:
            self.ring.skip(start_sample - self.position)
        self._position = start_sample
        self._window.clear()
        self._floor = self.position
        return events

    def _listen(self, frame: _Frame) -> list[VadEvent]:
        """Idle: start when enough of the start window is voiced."""
        self._window.append(frame)
        if sum(f.voiced for f in self._window) < self.config.start_frames:
            return []
        voiced = [f for f in self._window if f.voiced]
        self._speech_start = voiced[0].start
        self._speech_end = voiced[-1].start + self.config.frame_samples
        pre_roll = SAMPLE_RATE * self.config.pre_roll_ms // 1000
        self._utt_start = max(self._speech_start - pre_roll, self._floor, self.oldest_index)
        since_speech = [f for f in self._window if f.start >= self._speech_start]
        self._recent.clear()
        self._recent.extend(since_speech)
        self._silent_frames = 0  # the frame that completed the start window is voiced
        self._last_voiced = True
        self._window.clear()
        return [SpeechStarted(self._utt_start)]

    def _follow(self, frame: _Frame) -> list[VadEvent]:
        """In speech: end after the hangover, or cut when too long."""
        self._recent.append(frame)
        if frame.voiced and self._last_voiced:  # two in a row: still speaking
            self._silent_frames = 0
            self._speech_end = frame.start + self.config.frame_samples
        else:
            self._silent_frames += 1
        self._last_voiced = frame.voiced
        # A voiced frame may open a new run: decide on the next frame.
        if self._silent_frames >= self._hangover_frames and not frame.voiced:
            return self._finish("silence")
        # Cut before the next frame could make it too long: a cut lands at most half a frame
        # before the position, so every piece stays within max_utterance_ms.
        if self.position + self.config.frame_samples - self._utt_start > self._max_samples:
            return self._split()
        return []

    def _finish(self, reason: UtteranceReason) -> list[VadEvent]:
        """Close the utterance in progress: emit it (or drop it when too short), go idle."""
        assert self._utt_start is not None
        end = max(self._utt_start, min(self.closing_end, self.position))
        start, self._utt_start = self._utt_start, None
        self._window.clear()
        span_ms = (self._speech_end - self._speech_start) * 1000 / SAMPLE_RATE
        if span_ms < self.config.min_utterance_ms:
            _LOGGER.debug("Dropped %.0f ms of speech at %d", span_ms, start)
            return [SpeechDropped(start, end)]  # the next pre-roll may reuse its audio
        self._floor = end
        return [self._utterance(start, end, reason)]

    def _split(self) -> list[VadEvent]:
        """Cut at the middle of the quietest recent frame (unvoiced ones first); go on after it."""
        assert self._utt_start is not None
        half = self.config.frame_samples // 2
        candidates = [f for f in self._recent if f.start > self._utt_start] or list(self._recent)
        quietest = min(reversed(candidates), key=lambda f: (f.voiced, f.energy))
        cut = quietest.start + half
        piece = self._utterance(self._utt_start, cut, "max_length")
        self._utt_start = self._speech_start = self._floor = cut
        self._recent.clear()
        return [piece, SpeechStarted(cut)]

    @property
    def oldest_index(self) -> int:
        """The oldest sample an utterance may still start at."""
        return self.history.oldest_index

    def audio(self, start: int, end: int) -> np.ndarray:
        """float32 samples [start, end) of the timeline (at most `history_samples` back)."""
        return self.history.read_float(start, end)

    def _utterance(self, start: int, end: int, reason: UtteranceReason) -> Utterance:
        audio = self.audio(start, end)
        post_roll = self.post_roll_samples if reason == "silence" else 0
        return Utterance(audio, start, end, reason, post_roll)
