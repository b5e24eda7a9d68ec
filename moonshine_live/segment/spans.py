"""Where the speech is in audio already in memory: the live segmenter, run over a whole file.

Files are segmented by the same `Segmenter` as the microphone (one definition of speech for
both), and only the file policy is added here: utterances closer than `max_gap_s` are joined,
so a sentence with pauses decodes as one piece, and each keeps 300 ms of audio around its voiced
part (Moonshine needs a little silence on both sides, and returns nothing for a short command
buried in long silence).
"""

from __future__ import annotations

import numpy as np

from ..capture.audio import SAMPLE_RATE, float32_to_int16
from .vad import Segmenter, SpeechDetector, Utterance, VadConfig

FILE_VAD = VadConfig(pre_roll_ms=300, post_roll_ms=300, max_utterance_ms=30_000)
"""Files: 300 ms kept on both sides; no cut for length (the transcriber cuts long pieces at
pauses to its own limit)."""


class _Samples:
    """A whole array as the segmenter's history (`AudioHistory`): every sample readable."""

    oldest_index = 0

    def __init__(self, audio: np.ndarray) -> None:
        self._audio = audio

    def read_float(self, start: int, end: int) -> np.ndarray:
        return self._audio[start:end]


def speech_spans(
    audio: np.ndarray,
    *,
    config: VadConfig = FILE_VAD,
    is_speech: SpeechDetector | None = None,
    max_gap_s: float = 1.0,
) -> list[tuple[int, int]]:
    """[start, end) sample ranges of float32 16 kHz `audio` that hold speech, in order.

    Spans are the segmenter's utterances (pre- and post-roll included), joined across gaps
    under `max_gap_s`.
    """
    audio = np.asarray(audio, dtype=np.float32)
    segmenter = Segmenter(config, is_speech, history=_Samples(audio))
    size = config.frame_samples
    pcm = float32_to_int16(audio[: len(audio) // size * size])
    events = []
    for start in range(0, len(pcm), size):
        events += segmenter.process(pcm[start : start + size], start)
    events += segmenter.force_end()
    found = [(e.start_sample, e.end_sample) for e in events if isinstance(e, Utterance)]
    return _join(found, round(max_gap_s * SAMPLE_RATE))


def _join(spans: list[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    joined: list[tuple[int, int]] = []
    for start, end in spans:
        if joined and start - joined[-1][1] < max_gap:
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
    return joined
