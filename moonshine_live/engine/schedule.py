"""What the model transcribes next, and when: finals before early-commit attempts before
partials, with the segmenter that cuts the audio into them.

One model serves everything, so the order matters: a closed utterance (a final) is what the user
waits for; an early-commit attempt (a pause long enough to end a command, while the VAD's
hangover still runs) may act sooner; a partial (the growing utterance, re-decoded every
`partial_interval_ms`) is only for display and never delays a final.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..asr.transcript import Transcript
from ..capture.audio import SAMPLE_RATE
from ..capture.sources import AudioHistory
from ..events import Dropped, Event, SpeechStart
from ..segment.vad import Pause, Segmenter, SpeechStarted, Utterance, VadEvent
from .config import EngineConfig
from .stats import Counters


@dataclass
class Job:
    """One piece of audio for the worker."""

    audio: np.ndarray
    start_sample: int
    end_sample: int
    final: bool
    reason: str = "silence"
    speech_end_sample: int = 0  # last voiced sample, for latency
    emitted_at: float = 0.0  # monotonic time the segmenter finished it
    early: bool = False  # an early-commit attempt (EngineConfig.early_commit_ms)

    @property
    def t_start(self) -> float:
        return self.start_sample / SAMPLE_RATE

    @property
    def t_end(self) -> float:
        return self.end_sample / SAMPLE_RATE

    @property
    def latency_ms(self) -> float:
        """From the end of speech to now."""
        return (time.monotonic() - self.emitted_at) * 1000


EarlyAction = Callable[[Job, Transcript], bool]
"""Acts on an early transcript if it is exactly a command; returns whether it did."""


class Scheduler:
    """Frames in (`feed`), jobs out (`next_job`), early results back (`commit_early`)."""

    def __init__(self, config: EngineConfig, emit: Callable[[Event], None], counts: Counters):
        self.config = config
        self.segmenter = Segmenter(config.vad, pause_ms=config.early_commit_pause_ms)
        self.counts = counts
        self._emit = emit
        self.early_commit = False  # set by the engine: needs a grammar and a live source
        self.work = asyncio.Event()  # set when there is something for the worker
        self.finals: deque[Job] = deque()
        self.running: Job | None = None  # the job the worker is transcribing now
        self._partial: Job | None = None
        self._early: Job | None = None
        self._pause: Pause | None = None  # a pause not acted on yet (a final was waiting)
        self._committed: Job | None = None  # the early job whose command was dispatched
        self._parked: Job | None = None  # a final waiting on its utterance's early attempt
        self._last_partial_at = 0

    def listen_to(self, history: AudioHistory | None) -> None:
        """Read utterances from the source's own audio (before the first frame): one ring, no
        copy, no format round trip."""
        if history is not None:
            self.segmenter = Segmenter(
                self.config.vad, history=history, pause_ms=self.config.early_commit_pause_ms
            )

    @property
    def position(self) -> int:
        """Samples of the timeline consumed so far (the end of the last frame)."""
        return self.segmenter.position

    @property
    def in_utterance(self) -> bool:
        return self.segmenter.utterance_start is not None

    # -- frames in -------------------------------------------------------------------------------

    def feed(self, frame: np.ndarray, start: int) -> None:
        """One frame at absolute sample `start`; a gap before it was audio the source lost."""
        if self.segmenter.started and start > self.position:
            self._emit(Dropped(self.position / SAMPLE_RATE, start / SAMPLE_RATE, "overrun"))
        for event in self.segmenter.process(frame, start):
            self._on_vad_event(event)
        self._maybe_request_partial()
        self._maybe_request_early()

    def flush(self) -> None:
        """End the utterance in progress (the source ended or died)."""
        for event in self.segmenter.force_end():
            self._on_vad_event(event)

    def _on_vad_event(self, event: VadEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._last_partial_at = self.position
            self._emit(SpeechStart(t=event.start_sample / SAMPLE_RATE))
        elif isinstance(event, Pause):
            self._pause = event
        elif isinstance(event, Utterance):
            self._partial = self._early = self._pause = None
            self._enqueue_final(event)
        else:
            self._partial = self._early = self._pause = None

    def _speech_ended_at(self, speech_end: int) -> float:
        """The monotonic time the last voiced sample was captured."""
        return time.monotonic() - (self.position - speech_end) / SAMPLE_RATE

    def _enqueue_final(self, utterance: Utterance) -> None:
        self.counts.utterances += 1
        committed, self._committed = self._committed, None
        if committed is not None and committed.start_sample != utterance.start_sample:
            committed = None  # it belonged to an earlier utterance
        speech_end = self.segmenter.speech_end
        if committed is not None and committed.speech_end_sample == speech_end:
            self.counts.transcribed += 1  # nothing said since: the early text stands
            return
        running = self.running
        awaited = (
            running is not None
            and running.early
            and running.start_sample == utterance.start_sample
            and running.speech_end_sample == speech_end
        )
        voiced_end = utterance.end_sample - utterance.post_roll_samples
        job = Job(
            audio=utterance.audio,
            start_sample=utterance.start_sample,
            end_sample=utterance.end_sample,
            final=True,
            reason=utterance.reason,
            speech_end_sample=voiced_end,
            emitted_at=self._speech_ended_at(voiced_end),
        )
        if awaited:
            # the early attempt on this very speech is being decoded: its result decides,
            # however long it takes on this machine (the final is transcribed only if it was
            # not exactly a command)
            self._parked = job
            return
        self.finals.append(job)
        while len(self.finals) > self.config.max_pending:
            old = self.finals.popleft()
            self.counts.dropped += 1
            self._emit(Dropped(old.t_start, old.t_end, "queue_full"))
        self.work.set()

    def _maybe_request_partial(self) -> None:
        interval = self.config.partial_interval_ms * SAMPLE_RATE // 1000
        # no partial while the hangover runs: speech has likely ended, and a partial still
        # decoding when the utterance closes would delay its final transcript
        start = self.segmenter.utterance_start
        if not interval or start is None or self.finals:
            return
        if not self.segmenter.last_voiced:
            return
        if self.position - self._last_partial_at < interval:
            return
        self._last_partial_at = self.position
        # the segmenter reads back the utterance in progress (at most max_utterance_ms)
        start = max(start, self.segmenter.oldest_index)
        audio = self.segmenter.audio(start, self.position)
        self._partial = Job(audio=audio, start_sample=start, end_sample=self.position, final=False)
        self.work.set()

    def _maybe_request_early(self) -> None:
        """A pause long enough to end a command (the segmenter's `Pause`): transcribe the
        utterance so far, once, when no final waits, padded with silence to the trailing
        silence a final utterance keeps."""
        pause, segmenter = self._pause, self.segmenter
        if pause is None or not self.early_commit or self.finals:
            return
        self._pause = None
        start, speech_end = pause.start_sample, pause.speech_end_sample
        if segmenter.utterance_start != start or segmenter.speech_end != speech_end:
            return  # speech resumed since, or the utterance ended
        position = self.position
        audio = segmenter.audio(start, position)
        padding = np.zeros(max(0, segmenter.closing_end - position), dtype=np.float32)
        self._early = Job(
            audio=np.concatenate([audio, padding]),
            start_sample=start,
            end_sample=position,
            final=False,
            reason="early",
            speech_end_sample=speech_end,
            emitted_at=self._speech_ended_at(speech_end),
            early=True,
        )
        self.work.set()

    # -- jobs out, results back ------------------------------------------------------------------

    def next_job(self) -> Job | None:
        if self.finals:
            return self.finals.popleft()
        if self._early is not None:
            job, self._early = self._early, None
            return job
        job, self._partial = self._partial, None
        return job

    def unpark(self) -> None:
        """The final that waited on an early attempt goes to the model after all."""
        if self._parked is not None:
            self.finals.appendleft(self._parked)  # older than any final queued since
            self._parked = None
            self.work.set()

    def commit_early(self, job: Job, transcript: Transcript, act: EarlyAction) -> None:
        """Act on an early transcript if nothing was said since and it is exactly a command;
        otherwise drop it without a trace (the final decides). The utterance may have ended
        while it was decoded (a slow CPU, a partial still running when the pause began): its
        final waits here (`_parked`) and is transcribed only if the early one is no command."""
        segmenter = self.segmenter
        parked = self._parked
        if parked is not None and parked.start_sample == job.start_sample:
            self._parked = None
            if not act(job, transcript):
                self.finals.appendleft(parked)  # older than any final queued since
                self.work.set()
            else:
                self.counts.transcribed += 1  # the early text stands for the whole
            return
        self.unpark()
        if segmenter.utterance_start != job.start_sample:
            return  # the utterance ended (its final is queued) or another began
        if segmenter.speech_end != job.speech_end_sample:
            return  # speech resumed
        if act(job, transcript):
            self._committed = job
