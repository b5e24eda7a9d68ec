"""`Engine`: source -> segmenter -> warm transcriber -> (matcher) -> events and callbacks.

Three asyncio tasks: capture (frames into the segmenter; never waits on the model, `capture.py`),
transcription (one utterance at a time on the model's thread, in the order `schedule.py` picks),
and stats. Everything the engine does comes out as an `Event`, through `events()` and through
callbacks registered with `on()`. This is the only module that knows every stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..asr.transcript import Transcript
from ..capture.audio import SAMPLE_RATE
from ..capture.mic import MicSource
from ..capture.sources import AudioSource, SourceTraits
from ..commands import CommandStage
from ..commands.bus import EventBus
from ..commands.constrained import Recognition
from ..commands.dispatcher import Dispatcher
from ..errors import MoonshineLiveError
from ..events import (
    CommandEvent,
    ErrorEvent,
    Event,
    Partial,
    Ready,
    Stats,
    Stopped,
    TranscriptEvent,
)
from .callbacks import Callbacks
from .capture import CaptureLoop
from .config import EngineConfig
from .join import Held
from .schedule import Job, Scheduler
from .stats import Counters

_LOGGER = logging.getLogger(__name__)

HELD_POLL_S = 0.05
"""How often the worker looks at the join window of a held utterance while nothing else is due."""


class Engine(Callbacks):
    """Live speech to events. Use as `async with Engine(config) as engine:`."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        source: AudioSource | None = None,
        transcriber: Any = None,
    ) -> None:
        """`transcriber`: a loaded `Transcriber` to share (several engines may use one)."""
        self.config = config or EngineConfig()
        commands = self.config.commands
        super().__init__(
            CommandStage(commands) if commands.grammars else None,
            Dispatcher(self.config.dispatch, on_error=self._callback_failed),
        )
        self._source = source
        self._transcriber = transcriber
        self._traits = SourceTraits()  # what the source can do: known at start()
        self._bus = EventBus(self._dispatcher)
        if self.commands is not None:
            self.commands.attach(self._bus)
        self._counts = Counters()
        self._schedule = Scheduler(self.config, self._emit, self._counts)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="transcriber")
        self._held: Held | None = None  # an unfinished command waiting for its end
        self._join_samples = self.config.join_within_ms * SAMPLE_RATE // 1000
        self._tasks: list[asyncio.Task[Any]] = []
        self._capture_done = asyncio.Event()
        self._stop_reason = "end_of_stream"
        self._stopped = asyncio.Event()
        self.ready = asyncio.Event()

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
        loop = asyncio.get_running_loop()
        if self._transcriber is None:
            from ..asr.transcriber import Transcriber

            self._transcriber = await loop.run_in_executor(
                self._executor, Transcriber, self.config.decode
            )
        if self.commands is not None and self.commands.decodes_constrained(self._transcriber):
            try:
                await loop.run_in_executor(self._executor, self.commands.warm_up, self._transcriber)
            except Exception:  # the first command pays for it instead; say why
                _LOGGER.warning("warming up the grammar search failed", exc_info=True)
        if self._source is None:
            self._source = MicSource(self.config.capture)
        self._counts.restart_clocks()
        traits = self._traits = SourceTraits.of(self._source)
        self._schedule.listen_to(traits.history)
        # a file read at full speed: never (nothing is gained by acting before its end); by
        # default only on a microphone, since it changes when (and so with which reason and
        # end time) a transcript comes, and a recording must give the same events at any speed
        explicit = self.config.early_commit_ms is not None
        self._schedule.early_commit = bool(
            self.config.early_commit_pause_ms
            and self.commands
            and traits.realtime
            and (explicit or traits.live)
        )
        self._tasks = [
            asyncio.create_task(self._capture_loop(), name="capture"),
            asyncio.create_task(self._worker_loop(), name="transcribe"),
        ]
        if self.config.stats_interval_s:
            self._tasks.append(asyncio.create_task(self._stats_loop(), name="stats"))
        if self.commands and self.config.commands.reload_interval_s:
            reload = self.commands.reload_loop(lambda: self.position_s)
            self._tasks.append(asyncio.create_task(reload, name="grammar"))
        self._bus.emit(self._ready_event(started, traits), sticky=True)
        self.ready.set()

    def _ready_event(self, started: float, traits: SourceTraits) -> Ready:
        transcriber = self._transcriber
        return Ready(
            t=0.0,
            load_ms=(time.monotonic() - started) * 1000,
            device=str(getattr(transcriber, "device", "cpu")),
            source=traits.description,
            compiled=bool(getattr(transcriber, "compiled", False)),
            warm_up_ms=float(getattr(transcriber, "warm_up_ms", 0.0)),
            compiled_from_cache=bool(getattr(transcriber, "compiled_from_cache", False)),
            amx=bool(getattr(transcriber, "amx", False)),
            int8_kernel=bool(getattr(transcriber, "int8_kernel", False)),
        )

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
        return self._schedule.position / SAMPLE_RATE

    # -- the three tasks -------------------------------------------------------------------------

    async def _capture_loop(self) -> None:
        assert self._source is not None
        schedule = self._schedule
        capture = CaptureLoop(
            self._source,
            self._traits,
            self.config,
            position=lambda: schedule.position,
            consume=schedule.feed,
            flush=schedule.flush,
            backlog=lambda: len(schedule.finals),
            report=self._report_capture,
        )
        await capture.run()
        if capture.failed:
            self._stop_reason = "error"
        self._capture_done.set()
        schedule.work.set()

    def _report_capture(self, message: str, fatal: bool) -> None:
        self._emit(ErrorEvent(message=message, t=self.position_s, fatal=fatal))

    async def _worker_loop(self) -> None:
        schedule = self._schedule
        while True:
            job = schedule.next_job()
            held = self._held
            if job is None:
                if held is not None and (self._capture_done.is_set() or self._held_expired(held)):
                    self._held = None
                    self._deliver(held.job, held.recognition, hold=False)
                    continue
                if self._capture_done.is_set():
                    break
                schedule.work.clear()
                if held is None:
                    await schedule.work.wait()
                else:  # the join window is watched as the audio position moves
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(schedule.work.wait(), HELD_POLL_S)
                continue
            if held is not None and job.final:
                self._held = None
                if await self._joined(held, job):
                    continue
                self._deliver(held.job, held.recognition, hold=False)  # its refusal stands
            transcript = await self._transcribe(job)
            if transcript is not None:
                self._deliver(job, transcript)
        if self.commands is not None:
            await self.commands.wait_actions()
        await self._dispatcher.drain()  # callbacks of the last utterance, and their errors
        self._finish(self._stop_reason)

    async def _joined(self, held: Held, job: Job) -> bool:
        """Decode a held unfinished command with the final that follows it, as one; True when
        that gave a command (or again the start of one) and was delivered."""
        if not held.continued_by(job, self._join_samples):
            return False
        joined = held.joined_with(job)
        result = await self._transcribe(joined)
        if not isinstance(result, Recognition) or not (result.command or result.unfinished):
            return False
        self._counts.transcribed += 1  # the held utterance: transcribed as part of this one
        self._deliver(joined, result)
        return True

    def _held_expired(self, held: Held) -> bool:
        schedule = self._schedule
        return held.expired(schedule.position, self._join_samples, schedule.in_utterance)

    async def _transcribe(self, job: Job) -> Transcript | Recognition | None:
        """The job's transcript, or None after reporting why there is none."""
        loop = asyncio.get_running_loop()
        schedule = self._schedule
        schedule.running = job
        try:
            began = time.monotonic()
            commands = self.commands
            if (
                job.final
                and commands is not None
                and commands.decodes_constrained(self._transcriber)
            ):
                commands.check_grammar(self.position_s)  # decode within the grammar of now
                transcript: Transcript | Recognition = await loop.run_in_executor(
                    self._executor, commands.recognize, self._transcriber, job.audio, job.t_start
                )
            else:
                transcript = await loop.run_in_executor(
                    self._executor,
                    self._transcriber.transcribe,
                    job.audio,
                    SAMPLE_RATE,
                    job.t_start,
                )
            self._counts.compute_s += time.monotonic() - began
            return transcript
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed utterance is reported; the engine goes on
            _LOGGER.exception("transcription failed")
            self._emit(ErrorEvent(message=f"transcription failed: {exc}", t=job.t_end))
            schedule.unpark()
            return None
        finally:
            schedule.running = None

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval_s)
            self._emit(self.stats())

    # -- results ---------------------------------------------------------------------------------

    def _deliver(self, job: Job, result: Transcript | Recognition, hold: bool = True) -> None:
        """Emit a job's result; `hold`: a final that is an unfinished command waits for the
        next utterance instead (`engine/join.py`)."""
        found = result if isinstance(result, Recognition) else None
        if hold and job.final and found is not None and found.unfinished and self._join_samples:
            self._held = Held(job, found)
            return
        transcript = found.free if found is not None else result
        assert isinstance(transcript, Transcript)
        if job.early:
            assert self.commands is not None
            self._schedule.commit_early(job, transcript, self._act_early)
            return
        if not job.final:
            if self._schedule.in_utterance:  # a partial of an utterance already over is stale
                self._emit(Partial(text=transcript.text, t_start=job.t_start, t_end=job.t_end))
            return
        self._counts.transcribed += 1
        event = _transcript_event(job, transcript, job.reason)
        self._emit(event)
        if self.commands is None:
            return
        if found is not None:
            self.commands.handle_recognition(event, found)
        else:
            self.commands.check_grammar(self.position_s)
            self.commands.handle(event)

    def _act_early(self, job: Job, transcript: Transcript) -> bool:
        """Emit and dispatch the early transcript if it is exactly a command."""
        assert self.commands is not None
        event = _transcript_event(job, transcript, "early")
        command = self.commands.match(event, exact_only=True)
        if not isinstance(command, CommandEvent):
            return False
        transcriber = self._transcriber
        if self.commands.decodes_constrained(transcriber) and not self.commands.settled(
            transcriber, transcript.tokens
        ):
            return False  # more words could make it another command: the final decides
        if self.commands.fired(command):
            return True  # a second pause in the same command: it fired once, the text stands
        self._emit(event)
        self.commands.dispatch(command)
        return True

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

    def stats(self) -> Stats:
        """Figures since the last call (CPU) and since the start (everything else)."""
        overruns = int(getattr(self._source, "overruns", 0))
        return self._counts.report(self.position_s, len(self._schedule.finals), overruns)


def _transcript_event(job: Job, transcript: Transcript, reason: str) -> TranscriptEvent:
    return TranscriptEvent(
        text=transcript.text,
        t_start=job.t_start,
        t_end=job.t_end,
        latency_ms=job.latency_ms,
        tokens=tuple(transcript.tokens),
        avg_logprob=transcript.avg_logprob,
        reason=reason,
        stop_reason=transcript.stop_reason,
        encode_ms=transcript.encode_ms,
        decode_ms=transcript.decode_ms,
    )


__all__ = ["Engine", "EngineConfig", "MoonshineLiveError"]
