"""Recordings in, one command (or one refusal) per file: the offline form of `listen`.

For testing a grammar on recordings and for batch evaluation. Each file is one utterance: its
speech, found by the live segmenter, from the first word to the last (with the silence the
segmenter keeps around it), decoded within the grammar and judged exactly as the engine does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..capture.audio import SAMPLE_RATE, load_audio
from ..errors import AudioFormatError, MoonshineLiveError
from ..events import CommandEvent, RejectedEvent, TranscriptEvent
from ..segment.spans import speech_spans
from .stage import CommandStage

MAX_COMMAND_S = 30.0
"""Longest speech taken as one command (Moonshine's training clips are up to about 30 s)."""


@dataclass(frozen=True)
class FileResult:
    path: str
    event: CommandEvent | RejectedEvent

    def to_json(self) -> dict[str, Any]:
        return {"file": self.path, **self.event.to_json()}

    def line(self) -> str:
        event = self.event
        if isinstance(event, CommandEvent):
            slots = " ".join(f"{k}={v}" for k, v in event.slots.items())
            said = f"{event.intent} {slots}".strip()
            return f"{said}  ({event.confidence:.2f}: {event.text!r})"
        return f"rejected: {event.reason} ({event.confidence:.2f}: {event.text!r})"


def recognize_files(
    stage: CommandStage, transcriber: object, paths: Iterable[str | Path]
) -> Iterable[FileResult]:
    """One result per file, in order; a file that cannot be read raises AudioFormatError."""
    for path in paths:
        audio = load_audio(path)
        spans = speech_spans(audio)
        start, end = (spans[0][0], spans[-1][1]) if spans else (0, len(audio))
        if (end - start) / SAMPLE_RATE > MAX_COMMAND_S:
            raise AudioFormatError(
                f"{path}: {(end - start) / SAMPLE_RATE:.1f} s of speech is no single command "
                f"(at most {MAX_COMMAND_S:.0f} s); use `transcribe` for long recordings"
            )
        t_start = start / SAMPLE_RATE
        transcript = TranscriptEvent(
            text="", t_start=t_start, t_end=end / SAMPLE_RATE, latency_ms=0.0
        )
        if stage.decodes_constrained(transcriber):
            found = stage.recognize(transcriber, audio[start:end], t_start)
            event = stage.recognition_event(transcript, found)
        else:
            free = transcriber.transcribe(audio[start:end], SAMPLE_RATE, t_start)  # type: ignore[attr-defined]
            event = stage.match(TranscriptEvent(
                text=free.text, t_start=t_start, t_end=end / SAMPLE_RATE, latency_ms=0.0
            ))  # fmt: skip
        assert event is not None
        yield FileResult(str(path), event)


def print_results(stage: CommandStage, transcriber: object, paths: list[str], as_json: bool) -> int:
    """`moonshine-live recognize`: a line (or JSON object) per file; returns how many failed."""
    failed = 0
    for path in paths:
        try:
            (result,) = recognize_files(stage, transcriber, [path])
        except MoonshineLiveError as exc:
            print(f"moonshine-live: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if as_json:
            print(json.dumps(result.to_json()), flush=True)
        else:
            print(f"{path}: {result.line()}" if len(paths) > 1 else result.line(), flush=True)
    return failed
