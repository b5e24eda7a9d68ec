"""`EngineConfig`: every knob of a live pipeline, one frozen record (stages get their part)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..asr.config import DecodeConfig
from ..capture.mic import CaptureConfig
from ..commands import CommandConfig
from ..commands.dispatcher import DispatchConfig
from ..errors import ConfigError
from ..segment.vad import VadConfig


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
    early_commit_ms: int = 0
    """With a grammar and a live source: after this much silence (milliseconds, less than the
    VAD's `hangover_ms`; 0 = off) transcribe the utterance so far, and if it is exactly a
    command, act on it now instead of when the hangover ends. Its transcript has reason
    "early". Speech that resumes within the hangover is transcribed with it as usual, and
    the command already dispatched is not dispatched again. Trades a command that the next
    words would have changed ("open firefox ... settings") for acting sooner."""
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
        if self.max_pending < 1:
            raise ConfigError(f"EngineConfig.max_pending must be >= 1, got {self.max_pending}")
        if self.early_commit_ms and not 0 < self.early_commit_ms < self.vad.hangover_ms:
            raise ConfigError(
                f"EngineConfig.early_commit_ms must be 0 (off) or between 0 and the VAD's "
                f"hangover_ms ({self.vad.hangover_ms}), got {self.early_commit_ms}"
            )
        if self.stats_interval_s < 0 or self.reconnect_attempts < 0 or self.reconnect_delay_s < 0:
            raise ConfigError("EngineConfig stats/reconnect settings must be >= 0")
