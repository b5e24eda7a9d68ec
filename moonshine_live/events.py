"""What the engine reports: one frozen dataclass per event type, each with a JSON form.

Every event carries times on the audio timeline: seconds since the source started (for a file,
the position in the file). The JSON field names are a contract for other tools: fields may be
added, never renamed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    """Base of all engine events; `type` names it in JSON."""

    type: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        data = {"type": self.type}
        data.update({k: _rounded(v) for k, v in asdict(self).items()})
        return data


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_rounded(v) for v in value]
    return value


@dataclass(frozen=True)
class Ready(Event):
    """The model is loaded and warm; the first utterance will run at full speed."""

    type: ClassVar[str] = "ready"
    t: float
    load_ms: float
    """Time from engine start to ready (milliseconds)."""
    device: str
    source: str
    compiled: bool = False
    """Whether the decode step runs compiled (the fast path)."""
    warm_up_ms: float = 0.0
    """Part of `load_ms` spent compiling (or loading the compiled step) and warming up."""
    compiled_from_cache: bool = False
    """The compiled step was loaded from the on-disk cache (a warm start)."""
    amx: bool = False
    """The encoder's products run on AMX tiles (`accel/amx.py`); False: float32 GEMMs."""
    int8_kernel: bool = False
    """The decode step's int8 linears run our prefetching op (`accel/int8_kernel.py`); False:
    inductor's kernels (or float weights)."""


@dataclass(frozen=True)
class SpeechStart(Event):
    type: ClassVar[str] = "speech_start"
    t: float
    """Where the utterance's audio starts (pre-roll included)."""


@dataclass(frozen=True)
class Partial(Event):
    """Text of an utterance still being spoken (re-decoded as it grows; may change)."""

    type: ClassVar[str] = "partial"
    text: str
    t_start: float
    t_end: float


@dataclass(frozen=True)
class TranscriptEvent(Event):
    """Final text of one utterance."""

    type: ClassVar[str] = "transcript"
    text: str
    t_start: float
    t_end: float
    latency_ms: float
    """From the end of speech (last voiced frame) to this text being ready (milliseconds)."""
    tokens: tuple[int, ...] = ()
    avg_logprob: float = 0.0
    reason: str = "silence"
    """Why the utterance ended: silence, max_length, end_of_stream, gap; "early" for an early
    commit; "joined" for a command cut by a pause and decoded with what followed it."""
    stop_reason: str = "eos"
    """Why decoding stopped: "eos", "budget" (the token budget ran out) or "repetition"."""
    encode_ms: float = 0.0
    """Model time on the audio (milliseconds; `latency_ms` adds the wait and the decode)."""
    decode_ms: float = 0.0


@dataclass(frozen=True)
class CommandEvent(Event):
    """A transcript that matched an intent of the active grammar."""

    type: ClassVar[str] = "command"
    intent: str
    slots: dict[str, Any]
    text: str
    score: float
    t_start: float
    t_end: float
    latency_ms: float
    slot_text: dict[str, str] = field(default_factory=dict)
    """What was said for each slot filled from speech ({"workspace": "three"} where `slots` has
    the list's value, 3); a slot left to its default has no entry."""
    exact: bool = False
    """An exact parse of the grammar (score 1.0); False: a fuzzy match above the threshold."""
    normalized: str = ""
    """The text as the matcher compared it (lower case, numbers as words...)."""
    sentence: str = ""
    """The grammar template that matched."""
    confidence: float = 1.0
    """How sure the engine is that this command was said, 0..1. Constrained decoding: from the
    grammar's best sentence against the free decode of the same audio, and the command's share
    of the hypotheses; free decoding: the matcher's score."""
    margin: float = 0.0
    """Confidence minus the runner-up's (`alternatives[0]`); the confidence when alone."""
    alternatives: tuple[dict[str, Any], ...] = ()
    """The next likeliest commands: {"intent", "slots", "text", "confidence"} each."""
    decode: str = "free"
    """"constrained" (decoded within the active grammar) or "free" (decoded, then matched)."""
    free_text: str = ""
    """The free transcript of the same audio (constrained decoding; `text` is the grammar's)."""


@dataclass(frozen=True)
class RejectedEvent(Event):
    """A final transcript that is not dispatched as a command, and why (`reason`).

    Every final transcript ends in exactly one `command` or `rejected`. The matcher's reasons
    say in words why speech is no command, or not confidently one ("nothing like a command",
    "nothing was said" for a transcript without words, ...). A command held back has
    `best_intent` set and reason `committed_early` (this utterance's command was dispatched on
    its early commit) or `cooldown` (DispatchConfig.cooldown_ms, off by default). Decoded within
    the grammar, "unfinished" is the start of a command that nothing followed in time (see
    `engine/join.py`). Only speech that is no command goes to `otherwise` callbacks: not
    `committed_early` or `cooldown`, not "nothing was said".
    """

    type: ClassVar[str] = "rejected"
    text: str
    score: float
    best_intent: str | None
    reason: str
    t_start: float
    t_end: float
    confidence: float = 0.0
    """How sure the engine was of `best_intent` (constrained decoding), 0..1."""
    decode: str = "free"
    grammar_text: str = ""
    """The grammar's best sentence for this audio, refused (constrained decoding)."""


@dataclass(frozen=True)
class Dropped(Event):
    """Audio that was not transcribed, and why (never lost silently)."""

    type: ClassVar[str] = "dropped"
    t_start: float
    t_end: float
    reason: str


@dataclass(frozen=True)
class ErrorEvent(Event):
    type: ClassVar[str] = "error"
    message: str
    t: float
    fatal: bool = False
    """True when the engine stops because of it."""


@dataclass(frozen=True)
class Stats(Event):
    """Periodic health figures."""

    type: ClassVar[str] = "stats"
    t: float
    audio_s: float
    """Audio consumed since the start (seconds)."""
    utterances: int
    transcribed: int
    dropped: int
    queue: int
    rtf: float
    """Transcription time (finals and partials) / audio consumed (lower is faster)."""
    cpu_percent: float
    """Process CPU time over wall time since the last stats event, percent of one core."""
    overruns: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GrammarLoaded(Event):
    """The active grammar changed (a file was edited and reloaded without errors)."""

    type: ClassVar[str] = "grammar"
    t: float
    files: tuple[str, ...]
    intents: int


@dataclass(frozen=True)
class Stopped(Event):
    type: ClassVar[str] = "stopped"
    t: float
    reason: str


EVENT_TYPES: tuple[str, ...] = tuple(
    cls.type
    for cls in (
        Ready,
        SpeechStart,
        Partial,
        TranscriptEvent,
        CommandEvent,
        RejectedEvent,
        Dropped,
        ErrorEvent,
        Stats,
        GrammarLoaded,
        Stopped,
    )
)
