"""`Engine`: source -> segmenter -> warm transcriber -> (matcher) -> events and callbacks.

Three asyncio tasks: capture (frames into the ring and the segmenter; never waits on the model),
transcription (one utterance at a time in a single worker thread, finals before partials), and
stats. Everything the engine does comes out as an `Event`, through `events()` and through callbacks
registered with `on()`. This is the only module that knows every stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..asr.config import DecodeConfig
from ..capture.audio import SAMPLE_RATE, int16_to_float32
from ..capture.mic import CaptureConfig, MicSource
from ..capture.sources import ArraySource, AudioSource
from ..commands.bus import EventBus
from ..commands.dispatcher import Callback, DispatchConfig, Dispatcher
from ..commands.stage import CommandConfig, CommandStage
from ..errors import AudioDeviceError, ConfigError, MoonshineLiveError
from ..events import (
    EVENT_TYPES,
    CommandEvent,
    Dropped,
    ErrorEvent,
    Event,
    Partial,
    Ready,
    SpeechStart,
    Stats,
    Stopped,
    TranscriptEvent,
)
from ..segment.vad import Segmenter, SpeechDropped, SpeechStarted, Utterance, VadConfig

_LOGGER = logging.getLogger(__name__)


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


@dataclass
class _Job:
    """One piece of audio for the worker."""

    audio: np.ndarray
    start_sample: int
    end_sample: int
    final: bool
    reason: str = "silence"
    speech_end_sample: int = 0  # last voiced sample, for latency
    emitted_at: float = 0.0  # monotonic time the segmenter finished it
    early: bool = False  # an early-commit attempt (EngineConfig.early_commit_ms)
    done: CommandEvent | None = None  # dispatched early for this utterance: not again


class Engine:
    """Live speech to events. Use as `async with Engine(config) as engine:`."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        source: AudioSource | None = None,
        transcriber: Any = None,
    ) -> None:
        self.config = config or EngineConfig()
        commands = self.config.commands
        self.commands = CommandStage(commands) if commands.grammars else None
        self._source = source
        self._transcriber = transcriber
        self._dispatcher = Dispatcher(self.config.dispatch, on_error=self._callback_failed)
        self._bus = EventBus(self._dispatcher)
        if self.commands is not None:
            self.commands.attach(self._bus)
        self._finals: deque[_Job] = deque()
        self._partial: _Job | None = None
        self._early: _Job | None = None
        self._early_tried = -1  # speech_end of the last early attempt: one per pause
        self._committed: _Job | None = None  # the early job whose command was dispatched
        self._running: _Job | None = None  # the job the worker is transcribing now
        self._parked: _Job | None = None  # a final waiting on its utterance's early attempt
        self._early_commit = False  # set by start(): needs a grammar and a live source
        self._work = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="transcriber")
        self._tasks: list[asyncio.Task[Any]] = []
        self._segmenter = Segmenter(self.config.vad)
        self._position = 0  # samples consumed from the source
        self._speech_start: int | None = None
        self._last_partial_at = 0
        self._capture_done = asyncio.Event()
        self._stop_reason = "end_of_stream"
        self._stopped = asyncio.Event()
        self._counts = {"utterances": 0, "transcribed": 0, "dropped": 0}
        self._compute_s = 0.0
        self.ready = asyncio.Event()

    # -- public API ----------------------------------------------------------------------------

    def on(self, name: str) -> Callable[[Callback], Callback]:
        """Decorator: call the function for every event of type `name` ("transcript",
        "command", ... see EVENT_TYPES), or else for every command of the intent `name`
        (it receives the `CommandEvent`: intent, typed slots, text, score, times)."""
        key = name if name in EVENT_TYPES else f"intent:{name}"
        if key != name and self.commands and name not in self.commands.grammar.intents:
            _LOGGER.warning("on(%r): no such intent in the grammar (yet)", name)
        return self._register(key)

    def on_event(self, event_type: str) -> Callable[[Callback], Callback]:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}; choose from {EVENT_TYPES}")
        return self._register(event_type)

    def on_intent(self, intent: str) -> Callable[[Callback], Callback]:
        """Like `on()`, for an intent whose name is also an event type."""
        return self._register(f"intent:{intent}")

    def otherwise(self, callback: Callback) -> Callback:
        """Decorator: called with the `RejectedEvent` of speech that matched no command."""
        self._dispatcher.register("otherwise", callback)
        return callback

    def callback(self, name: str) -> Callable[[Callback], Callback]:
        """Decorator: the Python function a grammar's `call = "name"` action runs."""
        return self._register(f"call:{name}")

    def _register(self, key: str) -> Callable[[Callback], Callback]:
        def register(callback: Callback) -> Callback:
            self._dispatcher.register(key, callback)
            return callback

        return register

    @property
    def mode(self) -> str:
        return self.commands.mode if self.commands else ""

    def set_mode(self, mode: str) -> None:
        if self.commands is None:
            raise ConfigError("set_mode needs a grammar (EngineConfig.commands.grammars)")
        self.commands.mode = mode

    def set_context(self, *contexts: str) -> None:
        """The active contexts (e.g. the focused app); intents with a `context` need one."""
        if self.commands is None:
            raise ConfigError("set_context needs a grammar (EngineConfig.commands.grammars)")
        self.commands.set_contexts(contexts)

    def events(self) -> AsyncIterator[Event]:
        """Every event from now on (and `ready`, if it already happened), until the engine stops."""
        return self._bus.subscribe()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load and warm the model (off the loop), then start listening; `ready` is emitted."""
        started = time.monotonic()
        if self._transcriber is None:
            from ..asr.transcriber import Transcriber

            loop = asyncio.get_running_loop()
            self._transcriber = await loop.run_in_executor(
                self._executor, Transcriber, self.config.decode
            )
        if self._source is None:
            self._source = MicSource(self.config.capture)
        self._process_started = (time.monotonic(), time.process_time())
        live = getattr(self._source, "realtime", True)  # a file read at full speed: never
        self._early_commit = bool(self.config.early_commit_ms and self.commands and live)
        self._tasks = [
            asyncio.create_task(self._capture_loop(), name="capture"),
            asyncio.create_task(self._worker_loop(), name="transcribe"),
        ]
        if self.config.stats_interval_s:
            self._tasks.append(asyncio.create_task(self._stats_loop(), name="stats"))
        if self.commands and self.config.commands.reload_interval_s:
            reload = self.commands.reload_loop(lambda: self.position_s)
            self._tasks.append(asyncio.create_task(reload, name="grammar"))
        load_ms = (time.monotonic() - started) * 1000
        device = str(getattr(self._transcriber, "device", "cpu"))
        transcriber = self._transcriber
        ready = Ready(
            t=0.0,
            load_ms=load_ms,
            device=device,
            source=_describe(self._source),
            compiled=bool(getattr(transcriber, "compiled", False)),
            warm_up_ms=float(getattr(transcriber, "warm_up_ms", 0.0)),
            compiled_from_cache=bool(getattr(transcriber, "compiled_from_cache", False)),
            amx=bool(getattr(transcriber, "amx", False)),
            int8_kernel=bool(getattr(transcriber, "int8_kernel", False)),
        )
        self._bus.emit(ready, sticky=True)
        self.ready.set()

    async def wait(self) -> None:
        """Until the source is exhausted and every utterance is transcribed (or stop())."""
        await self._stopped.wait()

    async def stop(self, reason: str = "stopped") -> None:
        """Stop listening, finish nothing new, close the device; idempotent."""
        if self._stopped.is_set() and not self._tasks:
            return
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self._dispatcher.drain(timeout_s=1.0)
        self._finish(reason)
        self._dispatcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def position_s(self) -> float:
        return self._position / SAMPLE_RATE

    # -- capture -------------------------------------------------------------------------------

    async def _capture_loop(self) -> None:
        """Read the source to its end. A microphone that dies mid-stream is reopened up to
        `reconnect_attempts` times; one that never opened (no such device) is fatal at once."""
        attempts = 0
        while True:
            position = self._position
            try:
                await self._read_source()
                break
            except asyncio.CancelledError:
                raise
            except AudioDeviceError as exc:
                self._flush_segmenter()
                attempts = 1 if self._position > position else attempts + 1
                retry = isinstance(self._source, MicSource) and self._position > 0
                if not retry or attempts > self.config.reconnect_attempts:
                    self._fail(str(exc))
                    break
                self._emit(ErrorEvent(message=f"{exc}; reopening ({attempts})", t=self.position_s))
                await asyncio.sleep(self.config.reconnect_delay_s)
            except Exception as exc:
                _LOGGER.exception("capture failed")
                self._fail(f"capture failed: {exc}")
                break
        self._flush_segmenter()
        self._capture_done.set()
        self._work.set()

    def _fail(self, message: str) -> None:
        self._emit(ErrorEvent(message=message, t=self.position_s, fatal=True))
        self._stop_reason = "error"

    async def _read_source(self) -> None:
        source = self._source
        assert source is not None
        can_wait = isinstance(source, ArraySource) and not source.realtime
        offset: int | None = None  # maps the source's sample count onto ours (reopens restart it)
        async with source:
            async for frame in source:
                if offset is None:
                    offset = self._position - source.frame_start
                start = offset + source.frame_start
                self._consume(frame, start)
                if can_wait:
                    while len(self._finals) >= self.config.max_pending:
                        await asyncio.sleep(0.005)

    def _consume(self, frame: np.ndarray, start: int) -> None:
        if start > self._position:  # the source skipped audio it could not keep
            self._emit(
                Dropped(
                    t_start=self._position / SAMPLE_RATE,
                    t_end=start / SAMPLE_RATE,
                    reason="overrun",
                )
            )
        self._position = start + len(frame)
        for event in self._segmenter.process(frame, start):
            self._on_vad_event(event)
        self._maybe_request_partial()
        self._maybe_request_early()

    def _flush_segmenter(self) -> None:
        for event in self._segmenter.force_end():
            self._on_vad_event(event)

    def _on_vad_event(self, event: SpeechStarted | Utterance | SpeechDropped) -> None:
        if isinstance(event, SpeechStarted):
            self._speech_start = event.start_sample
            self._last_partial_at = self._position
            self._emit(SpeechStart(t=event.start_sample / SAMPLE_RATE))
        elif isinstance(event, Utterance):
            self._speech_start = self._position if event.reason == "max_length" else None
            self._partial = self._early = None
            self._enqueue_final(event)
        else:
            self._speech_start = None
            self._partial = self._early = None

    def _enqueue_final(self, utterance: Utterance) -> None:
        self._counts["utterances"] += 1
        committed, self._committed = self._committed, None
        if committed is not None and committed.start_sample != utterance.start_sample:
            committed = None  # it belonged to an earlier utterance
        if committed is not None and committed.speech_end_sample == self._segmenter.speech_end:
            self._counts["transcribed"] += 1  # nothing said since: the early text stands
            return
        post_roll = self.config.vad.post_roll_ms * SAMPLE_RATE // 1000
        speech_end = utterance.end_sample - (post_roll if utterance.reason == "silence" else 0)
        running = self._running
        awaited = (
            running is not None
            and running.early
            and running.start_sample == utterance.start_sample
            and running.speech_end_sample == self._segmenter.speech_end
        )
        job = _Job(
            audio=utterance.audio,
            start_sample=utterance.start_sample,
            end_sample=utterance.end_sample,
            final=True,
            reason=utterance.reason,
            speech_end_sample=speech_end,
            emitted_at=time.monotonic() - (self._position - speech_end) / SAMPLE_RATE,
            done=committed.done if committed is not None else None,
        )
        if awaited:
            # the early attempt on this very speech is being decoded: its result decides,
            # however long it takes on this machine (the final is transcribed only if it was
            # not exactly a command)
            self._parked = job
            return
        self._finals.append(job)
        while len(self._finals) > self.config.max_pending:
            old = self._finals.popleft()
            self._counts["dropped"] += 1
            self._emit(
                Dropped(
                    t_start=old.start_sample / SAMPLE_RATE,
                    t_end=old.end_sample / SAMPLE_RATE,
                    reason="queue_full",
                )
            )
        self._work.set()

    def _maybe_request_partial(self) -> None:
        interval = self.config.partial_interval_ms * SAMPLE_RATE // 1000
        # no partial while the hangover runs: speech has likely ended, and a partial still
        # decoding when the utterance closes would delay its final transcript
        if not interval or self._speech_start is None or self._finals:
            return
        if not self._segmenter.last_voiced:
            return
        if self._position - self._last_partial_at < interval:
            return
        self._last_partial_at = self._position
        # the segmenter's ring holds the utterance in progress (at most max_utterance_ms)
        ring = self._segmenter.ring
        start = max(self._speech_start, ring.oldest_index)
        audio = int16_to_float32(ring.read(start, self._position))
        self._partial = _Job(
            audio=audio, start_sample=start, end_sample=self._position, final=False
        )
        self._work.set()

    def _maybe_request_early(self) -> None:
        """A pause long enough to end a command: transcribe the utterance so far (once per
        pause), padded with silence to the trailing silence a final utterance keeps."""
        if not self._early_commit or self._finals:
            return
        segmenter = self._segmenter
        start = segmenter.utterance_start
        if start is None:
            return
        speech_end = segmenter.speech_end
        if segmenter.silence_ms < self.config.early_commit_ms or speech_end == self._early_tried:
            return
        self._early_tried = speech_end
        audio = int16_to_float32(segmenter.ring.read(start, self._position))
        post_roll = self.config.vad.post_roll_ms * SAMPLE_RATE // 1000
        padding = np.zeros(max(0, speech_end + post_roll - self._position), dtype=np.float32)
        self._early = _Job(
            audio=np.concatenate([audio, padding]),
            start_sample=start,
            end_sample=self._position,
            final=False,
            reason="early",
            speech_end_sample=speech_end,
            emitted_at=time.monotonic() - (self._position - speech_end) / SAMPLE_RATE,
            early=True,
        )
        self._work.set()

    # -- transcription -------------------------------------------------------------------------

    async def _worker_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = self._next_job()
            if job is None:
                if self._capture_done.is_set():
                    break
                self._work.clear()
                await self._work.wait()
                continue
            self._running = job
            try:
                began = time.monotonic()
                transcript = await loop.run_in_executor(
                    self._executor,
                    self._transcriber.transcribe,
                    job.audio,
                    SAMPLE_RATE,
                    job.start_sample / SAMPLE_RATE,
                )
                self._compute_s += time.monotonic() - began
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed utterance is reported; the engine goes on
                _LOGGER.exception("transcription failed")
                self._emit(
                    ErrorEvent(
                        message=f"transcription failed: {exc}", t=job.end_sample / SAMPLE_RATE
                    )
                )
                self._unpark()
                continue
            finally:
                self._running = None
            self._deliver(job, transcript)
        if self.commands is not None:
            await self.commands.wait_actions()
        await self._dispatcher.drain()  # callbacks of the last utterance, and their errors
        self._finish(self._stop_reason)

    def _next_job(self) -> _Job | None:
        if self._finals:
            return self._finals.popleft()
        if self._early is not None:
            job, self._early = self._early, None
            return job
        job, self._partial = self._partial, None
        return job

    def _deliver(self, job: _Job, transcript: Any) -> None:
        t_start, t_end = job.start_sample / SAMPLE_RATE, job.end_sample / SAMPLE_RATE
        if job.early:
            self._commit_early(job, transcript)
            return
        if not job.final:
            if self._speech_start is not None:  # a partial of an utterance already over is stale
                self._emit(Partial(text=transcript.text, t_start=t_start, t_end=t_end))
            return
        self._counts["transcribed"] += 1
        event = TranscriptEvent(
            text=transcript.text,
            t_start=t_start,
            t_end=t_end,
            latency_ms=(time.monotonic() - job.emitted_at) * 1000,
            tokens=tuple(transcript.tokens),
            avg_logprob=transcript.avg_logprob,
            reason=job.reason,
        )
        self._emit(event)
        if self.commands is not None:
            self.commands.check_grammar(self.position_s)
            self.commands.handle(event, done=job.done)

    def _unpark(self) -> None:
        """The final that waited on an early attempt goes to the model after all."""
        if self._parked is not None:
            self._finals.appendleft(self._parked)  # older than any final queued since
            self._parked = None
            self._work.set()

    def _commit_early(self, job: _Job, transcript: Any) -> None:
        """Act on an early transcript if nothing was said since and it is exactly a command;
        otherwise drop it without a trace (the final decides). The utterance may have ended
        while it was decoded (a slow CPU, a partial still running when the pause began): its
        final waits here (`_parked`) and is transcribed only if the early one is no command."""
        segmenter = self._segmenter
        assert self.commands is not None
        parked = self._parked
        if parked is not None and parked.start_sample == job.start_sample:
            self._parked = None
            if not self._act_early(job, transcript):
                self._finals.appendleft(parked)  # older than any final queued since
                self._work.set()
            else:
                self._counts["transcribed"] += 1  # the early text stands for the whole
            return
        self._unpark()
        if segmenter.utterance_start != job.start_sample:
            return  # the utterance ended (its final is queued) or another began
        if segmenter.speech_end != job.speech_end_sample:
            return  # speech resumed
        if self._act_early(job, transcript):
            self._committed = job

    def _act_early(self, job: _Job, transcript: Any) -> bool:
        """Emit and dispatch the early transcript if it is exactly a command."""
        assert self.commands is not None
        event = TranscriptEvent(
            text=transcript.text,
            t_start=job.start_sample / SAMPLE_RATE,
            t_end=job.end_sample / SAMPLE_RATE,
            latency_ms=(time.monotonic() - job.emitted_at) * 1000,
            tokens=tuple(transcript.tokens),
            avg_logprob=transcript.avg_logprob,
            reason="early",
        )
        command = self.commands.match(event, exact_only=True)
        if not isinstance(command, CommandEvent):
            return False
        job.done = command
        self._emit(event)
        self.commands.dispatch(command)
        return True

    # -- events --------------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self._bus.emit(event)

    def _callback_failed(self, message: str) -> None:
        self._emit(ErrorEvent(message=message, t=self.position_s))

    def _finish(self, reason: str) -> None:
        if self._stopped.is_set():
            return
        self._emit(Stopped(t=self.position_s, reason=reason))
        self._bus.close()
        self._stopped.set()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval_s)
            self._emit(self.stats())

    def stats(self) -> Stats:
        """Figures since the last call (CPU) and since the start (everything else)."""
        wall, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._process_started
        self._process_started = (wall, cpu)
        cpu_percent = 100.0 * (cpu - last_cpu) / max(wall - last_wall, 1e-6)
        source = self._source
        return Stats(
            t=self.position_s,
            audio_s=self.position_s,
            utterances=self._counts["utterances"],
            transcribed=self._counts["transcribed"],
            dropped=self._counts["dropped"],
            queue=len(self._finals),
            rtf=self._compute_s / max(self.position_s, 1e-6),
            cpu_percent=cpu_percent,
            overruns=int(getattr(source, "overruns", 0)),
        )


def _describe(source: AudioSource | None) -> str:
    if isinstance(source, MicSource):
        return f"mic:{source.config.device if source.config.device is not None else 'default'}"
    return f"file:{getattr(source, 'name', 'audio')}"


__all__ = ["Engine", "EngineConfig", "MoonshineLiveError"]
