"""`EngineConfig`: every knob of a live pipeline, one frozen record (stages get their part)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..asr.config import DecodeConfig
from ..capture.mic import CaptureConfig
from ..commands import CommandConfig
from ..commands.dispatcher import DispatchConfig
from ..errors import ConfigError
from ..segment.vad import VadConfig

DEFAULT_EARLY_COMMIT_MS = 150
"""Early commit when decoding within a grammar and not set: half the VAD's default hangover."""


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs; stages get their own part."""

    capture: CaptureConfig = field(default_factory=CaptureConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    decode: DecodeConfig = field(default_factory=lambda: DecodeConfig(compile=True))
    """The live engine compiles its decode step: slower start (seconds, once cached), then
    every utterance decodes about 2x faster."""
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    commands: CommandConfig = field(default_factory=CommandConfig)
    """Grammars and actions; with no grammar the engine only transcribes."""
    partial_interval_ms: int = 500
    """Re-decode a growing utterance this often while the worker is free (milliseconds, 0 = off)."""
    early_commit_ms: int | None = None
    """With a grammar and a live source: after this much silence (milliseconds, less than the
    VAD's `hangover_ms`; 0 = off) transcribe the utterance so far, and if it is exactly a
    command, act on it now instead of when the hangover ends. Its transcript has reason
    "early". Speech that resumes within the hangover is transcribed with it as usual, and
    the command already dispatched is not dispatched again. Decoding within the grammar, it
    acts only on a command no further words could change (`TokenAutomaton.settled`), so it is
    on by default then, on a microphone (None: `DEFAULT_EARLY_COMMIT_MS`; a recording keeps
    the same events at any speed); decoding freely, a command that is a prefix of a longer one
    ("open firefox ... settings") would fire at the pause, so it is off."""
    join_within_ms: int = 1500
    """With constrained decoding: an utterance that is the start of a command ("set the
    kitchen light to") waits this long (milliseconds after its end; 0 = off) for the next
    one, and the two are decoded as one (`engine/join.py`)."""
    max_pending: int = 16
    """Finished utterances waiting for the model; past this the oldest is dropped and reported
    (a file source read as fast as possible waits instead)."""
    stats_interval_s: float = 10.0
    """Seconds between stats events (0 = off)."""
    reconnect_attempts: int = 3
    """Times a dead microphone is reopened before the engine stops."""
    reconnect_delay_s: float = 1.0

    def __post_init__(self) -> None:
        if self.partial_interval_ms < 0:
            raise ConfigError(
                f"EngineConfig.partial_interval_ms must be >= 0, got {self.partial_interval_ms}"
            )
        if not 0 <= self.join_within_ms <= 10_000:
            raise ConfigError(
                f"EngineConfig.join_within_ms must be in [0, 10000], got {self.join_within_ms}"
            )
        if self.max_pending < 1:
            raise ConfigError(f"EngineConfig.max_pending must be >= 1, got {self.max_pending}")
        if self.early_commit_ms and not 0 < self.early_commit_ms < self.vad.hangover_ms:
            raise ConfigError(
                f"EngineConfig.early_commit_ms must be 0 (off) or between 0 and the VAD's "
                f"hangover_ms ({self.vad.hangover_ms}), got {self.early_commit_ms}"
            )
        if self.stats_interval_s < 0 or self.reconnect_attempts < 0 or self.reconnect_delay_s < 0:
            raise ConfigError("EngineConfig stats/reconnect settings must be >= 0")

    @property
    def early_commit_pause_ms(self) -> int:
        """The early commit's pause in effect (0 = off): `early_commit_ms`, or by default
        `DEFAULT_EARLY_COMMIT_MS` when commands are decoded within the grammar and the VAD's
        hangover is longer."""
        if self.early_commit_ms is not None:
            return self.early_commit_ms
        commands = self.commands
        within = bool(commands.grammars) and commands.decode == "constrained"
        return (
            DEFAULT_EARLY_COMMIT_MS
            if within and self.vad.hangover_ms > DEFAULT_EARLY_COMMIT_MS
            else 0
        )
