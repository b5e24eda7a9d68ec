"""Frozen records that flow between pipeline stages. No behaviour beyond small derived values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Transcript:
    """Text of one utterance (or one file piece) with what it cost."""

    text: str
    tokens: tuple[int, ...]
    avg_logprob: float
    audio_s: float
    """Length of the transcribed audio (seconds)."""
    encode_ms: float
    decode_ms: float
    stop_reason: str = "eos"
    """"eos", "budget" or "repetition"."""
    t_start: float = 0.0
    """Start on the audio timeline (seconds since the source started)."""

    @property
    def t_end(self) -> float:
        return self.t_start + self.audio_s

    @property
    def latency_ms(self) -> float:
        return self.encode_ms + self.decode_ms
