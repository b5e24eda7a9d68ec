"""The command stage: transcripts -> commands through the active grammar, with hot reload.

Owns the grammar files, the compiled matcher, the run-time context and mode. A grammar file that
changes on disk is reloaded before the next utterance; a broken edit is reported and the previous
grammar stays active. Imports neither torch nor audio code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, GrammarError
from ..events import CommandEvent, ErrorEvent, GrammarLoaded, RejectedEvent, TranscriptEvent
from ..grammar import DEFAULT_MODE, Grammar, load_grammar
from ..grammar.matcher import NOTHING_SAID, CommandMatch, Matcher, MatcherConfig
from .actions import ActionConfig, ActionResult, run_intent
from .bus import EventBus
from .constrained import DECODE_MODES, ConstrainedConfig, GrammarDecoder, Recognition

_LOGGER = logging.getLogger(__name__)

SHIPPED_GRAMMARS = ("desktop", "home")
COMMITTED_EARLY, COOLDOWN = "committed_early", "cooldown"
"""`rejected` reasons of a matched command not dispatched (again)."""


@dataclass(frozen=True)
class CommandConfig:
    grammars: tuple[str, ...] = ()
    """Grammar files (or names of shipped grammars: "desktop", "home"), all active at once."""
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    actions: ActionConfig = field(default_factory=ActionConfig)
    run_actions: bool = True
    """Run the grammar's actions (argv, keys, typing); off, commands are only reported."""
    reload_interval_s: float = 1.0
    """How often grammar files are checked for edits (seconds, 0 = never)."""
    initial_mode: str = DEFAULT_MODE
    initial_contexts: tuple[str, ...] = ()
    decode: str = "constrained"
    """"constrained": each utterance is decoded within the active grammar (and freely, to refuse
    what is no command); "free": decoded freely, then matched as text."""
    constrained: ConstrainedConfig = field(default_factory=ConstrainedConfig)

    def __post_init__(self) -> None:
        if self.decode not in DECODE_MODES:
            raise ConfigError(
                f"CommandConfig.decode must be {' or '.join(DECODE_MODES)}, got {self.decode!r}"
            )
        if self.reload_interval_s < 0:
            raise ConfigError(
                f"CommandConfig.reload_interval_s must be >= 0, got {self.reload_interval_s}"
            )


def shipped_grammar_dirs() -> list[Path]:
    """Where shipped grammars live: the source tree, then the installed data directory."""
    import sys

    package = Path(__file__).resolve().parent.parent
    return [package.parent / "grammars", Path(sys.prefix) / "share" / "moonshine-live" / "grammars"]


def resolve_grammar_path(spec: str) -> Path:
    """A path as given, or a shipped grammar by name ("desktop" -> grammars/desktop.toml)."""
    path = Path(spec).expanduser()
    if path.exists() or os.sep in spec or spec.endswith(".toml"):
        return path
    for directory in shipped_grammar_dirs():
        candidate = directory / f"{spec}.toml"
        if candidate.is_file():
            return candidate
    raise GrammarError(
        f"no grammar file {spec!r} and no shipped grammar of that name "
        f"({', '.join(SHIPPED_GRAMMARS)})"
    )


SETTLE_NS = 200_000_000
"""A grammar file changed this recently (nanoseconds) is not loaded yet: an editor or a script
may have truncated it and not written it back. Reading it then once loaded an empty grammar,
which the finished write (a broken edit, rejected) could not replace."""


def _settled(stats: tuple[tuple[int, int], ...], now_ns: int | None = None) -> bool:
    """Whether every file's last change is at least SETTLE_NS old (a change dated in the future,
    a clock skew, counts as old: waiting would never end)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return all(not 0 <= now_ns - mtime < SETTLE_NS for mtime, _ in stats if mtime >= 0)


class CommandStage:
    """Matches final transcripts and keeps the grammar current."""

    def __init__(self, config: CommandConfig) -> None:
        self.config = config
        self.paths = tuple(resolve_grammar_path(p) for p in config.grammars)
        self.grammar: Grammar = load_grammar(self.paths)
        self.matcher = Matcher(self.grammar, config.matcher)
        self._mtimes = self._stat()
        self.mode = config.initial_mode
        self.contexts: frozenset[str] = frozenset(config.initial_contexts)
        self.reloads = 0
        self._bus: EventBus | None = None
        self._action_tasks: set[asyncio.Task[None]] = set()
        self._fired: CommandEvent | None = None  # the last command dispatched
        self._decoder: GrammarDecoder | None = None

    def attach(self, bus: EventBus) -> None:
        """Where commands, rejections and grammar errors go, and whose callbacks run."""
        self._bus = bus

    def _stat(self) -> tuple[tuple[int, int], ...]:
        """(mtime in ns, size) per file: an edit within one clock tick still changes the size."""
        stats = []
        for path in self.paths:
            try:
                stat = path.stat()
                stats.append((stat.st_mtime_ns, stat.st_size))
            except OSError:
                stats.append((-1, -1))
        return tuple(stats)

    def reload_if_changed(self) -> GrammarError | None:
        """Reload when a file changed; a broken edit keeps the old grammar and returns the error."""
        mtimes = self._stat()
        if mtimes == self._mtimes or not _settled(mtimes):
            return None  # unchanged, or changed so recently that it may be half written
        self._mtimes = mtimes
        try:
            grammar = load_grammar(self.paths)
            matcher = Matcher(grammar, self.config.matcher)
        except GrammarError as exc:
            _LOGGER.error("grammar reload failed, keeping the previous grammar: %s", exc)
            return exc
        except OSError as exc:
            return GrammarError(f"cannot read grammar: {exc}")
        self.grammar, self.matcher = grammar, matcher
        self.reloads += 1
        _LOGGER.info("grammar reloaded: %d intents", len(grammar.intents))
        return None

    def set_contexts(self, contexts: Iterable[str]) -> None:
        self.contexts = frozenset(contexts)

    def match(
        self, transcript: TranscriptEvent, *, exact_only: bool = False
    ) -> CommandEvent | RejectedEvent | None:
        """The command a final transcript is, or why it is not; changes nothing (a command's
        `set_mode` takes effect when it is dispatched).

        `exact_only`: only an exact parse counts; anything else gives None (the engine's early
        commit acts on exact commands only and otherwise waits).
        """
        started = time.monotonic()
        result = self.matcher.match(transcript.text, self.contexts, self.mode)
        latency = transcript.latency_ms + (time.monotonic() - started) * 1000
        if exact_only and not (isinstance(result, CommandMatch) and result.exact):
            return None
        if isinstance(result, CommandMatch):
            return _command_event(result, transcript, latency_ms=latency)
        return RejectedEvent(
            text=result.text,
            score=result.score,
            best_intent=result.best_intent,
            reason=result.reason,
            t_start=transcript.t_start,
            t_end=transcript.t_end,
        )

    # -- constrained decoding -------------------------------------------------------------------

    def decodes_constrained(self, transcriber: object) -> bool:
        """Whether finals are decoded within the grammar (a transcriber that cannot: freely)."""
        return self.config.decode == "constrained" and hasattr(transcriber, "transcribe_within")

    def _grammar_decoder(self, transcriber: object) -> GrammarDecoder:
        decoder = self._decoder
        if decoder is None or decoder.matcher is not self.matcher:  # a new load: new automata
            decoder = self._decoder = GrammarDecoder(
                transcriber,  # type: ignore[arg-type]
                self.matcher,
                self.config.constrained,
            )
        return decoder

    def warm_up(self, transcriber: object) -> None:
        """One search within the active grammar on a little noise (blocking: call it off the
        loop), so that loading or building the search step, and the automaton's first states,
        happen at start-up and not on the first command."""
        noise = np.random.default_rng(0).normal(0, 1e-3, 16000).astype(np.float32)
        self.recognize(transcriber, noise, 0.0)

    def recognize(self, transcriber: object, audio: object, t_start: float) -> Recognition:
        """Decode one utterance within the active grammar (blocking: call it off the loop)."""
        decoder = self._grammar_decoder(transcriber)
        return decoder.recognize(audio, self.contexts, self.mode, t_start)  # type: ignore[arg-type]

    def settled(self, transcriber: object, tokens: Iterable[int]) -> bool:
        """Whether these tokens are a whole command of the active grammar that no further words
        could change (acting on it at a pause is then safe)."""
        automaton = self._grammar_decoder(transcriber).automaton(self.contexts, self.mode)
        state = automaton.after(tokens)
        return state is not None and automaton.settled(state)

    def handle_recognition(self, transcript: TranscriptEvent, found: Recognition) -> None:
        """Emit and dispatch the command a constrained decode found (or the rejection)."""
        assert self._bus is not None, "attach() first"
        self._decide(self.recognition_event(transcript, found))

    def recognition_event(
        self, transcript: TranscriptEvent, found: Recognition
    ) -> CommandEvent | RejectedEvent:
        """The `command` or `rejected` event of a constrained decode; dispatches nothing."""
        match = found.match
        if found.command is not None and isinstance(match, CommandMatch):
            return _command_event(
                match,
                transcript,
                latency_ms=transcript.latency_ms,
                text=found.text,
                confidence=found.confidence,
                margin=found.margin,
                alternatives=tuple(
                    {
                        "intent": a.intent,
                        "slots": a.slots,
                        "text": a.text,
                        "confidence": a.confidence,
                    }
                    for a in found.alternatives
                ),
                decode="constrained",
                free_text=found.free.text,
            )
        nothing = not found.free.text.strip() and not found.text
        return RejectedEvent(
            text=found.free.text,
            score=match.score,
            best_intent=match.intent if isinstance(match, CommandMatch) else match.best_intent,
            reason=NOTHING_SAID if nothing else found.rejected or "no command",
            t_start=transcript.t_start,
            t_end=transcript.t_end,
            confidence=found.confidence,
            decode="constrained",
            grammar_text=found.text,
        )

    def run_actions(self, command: CommandEvent) -> tuple[ActionResult, ...]:
        """Run the intent's actions (blocking: call it off the event loop). `call` actions come
        back skipped; the engine dispatches them to registered callbacks."""
        if not self.config.run_actions:
            return ()
        return run_intent(self.grammar, command, self.config.actions)

    # -- running inside the engine (needs `attach` and a running event loop) -------------------

    def handle(self, transcript: TranscriptEvent, done: CommandEvent | None = None) -> None:
        """Match a final transcript; emit and dispatch the command (or the rejection).

        A command this stage already dispatched for the same utterance (committed early at a
        pause) is not dispatched again; `done` names such a command explicitly.
        """
        assert self._bus is not None, "attach() first"
        result = self.match(transcript)
        assert result is not None  # only an exact_only match gives None
        self._decide(result, done)

    def _decide(
        self, result: CommandEvent | RejectedEvent, done: CommandEvent | None = None
    ) -> None:
        """Dispatch a command; report a rejection (and hand speech that is no command to
        `otherwise` callbacks)."""
        assert self._bus is not None, "attach() first"
        if isinstance(result, CommandEvent):
            self.dispatch(result, done)
            return
        self._bus.emit(result)
        if result.reason != NOTHING_SAID:
            self._bus.dispatcher.dispatch("otherwise", result)

    def fired(self, command: CommandEvent, done: CommandEvent | None = None) -> bool:
        """Whether `command` (same intent and slots) was dispatched for its utterance already:
        an early commit, then the final or a second pause of the same speech."""
        done = done or self._fired
        return (
            done is not None
            and done.t_start == command.t_start
            and (done.intent, done.slots) == (command.intent, command.slots)
        )

    def dispatch(self, command: CommandEvent, done: CommandEvent | None = None) -> bool:
        """Emit a matched command, switch to its mode, call its callbacks and start its actions;
        returns whether it did. The one place that keeps a command from firing twice: once per
        utterance (`fired`; a `rejected` with reason `committed_early`), and an opt-in cooldown
        for the same intent heard again (reason `cooldown`)."""
        assert self._bus is not None, "attach() first"
        if self.fired(command, done):
            _LOGGER.info("%s was committed early; not dispatched again", command.intent)
            self._bus.emit(_held_back(command, COMMITTED_EARLY))
            return False
        dispatcher = self._bus.dispatcher
        if dispatcher.cooling_down(command.intent, command.t_start, command.t_end):
            _LOGGER.info("%s again within the cooldown; not dispatched", command.intent)
            self._bus.emit(_held_back(command, COOLDOWN))
            return False
        intent = self.grammar.intents.get(command.intent)
        if intent is not None and intent.set_mode:
            self.mode = intent.set_mode
        self._fired = command
        self._bus.emit(command)
        dispatcher.dispatch(f"intent:{command.intent}", command)
        task = asyncio.get_running_loop().create_task(self._act(command))
        self._action_tasks.add(task)
        task.add_done_callback(self._action_tasks.discard)
        return True

    async def _act(self, command: CommandEvent) -> None:
        """Run the intent's actions off the loop; `call` actions go to registered callbacks."""
        assert self._bus is not None
        results = await asyncio.get_running_loop().run_in_executor(None, self.run_actions, command)
        if self.config.actions.dry_run:
            return  # nothing ran, so nothing to call or report
        for result in results:
            name = getattr(result.action, "name", None)
            if result.skipped and name is not None:
                if not self._bus.dispatcher.dispatch(f"call:{name}", command):
                    problem = f"no callback registered for call = {name!r}"
                    self._bus.emit(
                        ErrorEvent(message=f"{command.intent}: {problem}", t=command.t_end)
                    )
            elif not result.ok:
                problem = f"action failed: {result.error}"
                self._bus.emit(ErrorEvent(message=f"{command.intent}: {problem}", t=command.t_end))

    async def wait_actions(self) -> None:
        if self._action_tasks:
            await asyncio.wait(set(self._action_tasks))

    def check_grammar(self, t: float) -> None:
        """Reload edited grammar files now; report the outcome as an event."""
        assert self._bus is not None
        reloads = self.reloads
        error = self.reload_if_changed()
        if error is not None:
            message = f"grammar not reloaded, previous one kept: {error}"
            self._bus.emit(ErrorEvent(message=message, t=t))
        elif self.reloads != reloads:
            files = tuple(str(p) for p in self.paths)
            self._bus.emit(GrammarLoaded(t=t, files=files, intents=len(self.grammar.intents)))

    async def reload_loop(self, position: Callable[[], float]) -> None:
        """Pick up edits between utterances too, so a broken edit is reported at once."""
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            self.check_grammar(position())


def _command_event(
    match: CommandMatch, transcript: TranscriptEvent, **fields: object
) -> CommandEvent:
    """The `command` event of a match of this transcript; `fields` add or override (the
    constrained decode's text, confidence ...)."""
    values: dict[str, object] = {
        "intent": match.intent,
        "slots": dict(match.slots),
        "text": match.text,
        "score": match.score,
        "t_start": transcript.t_start,
        "t_end": transcript.t_end,
        "slot_text": dict(match.slot_text),
        "exact": match.exact,
        "normalized": match.normalized,
        "sentence": match.sentence,
    }
    return CommandEvent(**{**values, **fields})  # type: ignore[arg-type]


def _held_back(command: CommandEvent, reason: str) -> RejectedEvent:
    """The `rejected` that reports a matched command not dispatched (again)."""
    return RejectedEvent(
        text=command.free_text or command.text,  # the transcript, as for every rejection
        score=command.score,
        best_intent=command.intent,
        reason=reason,
        t_start=command.t_start,
        t_end=command.t_end,
        confidence=command.confidence,
        decode=command.decode,
        grammar_text=command.text if command.free_text else "",
    )
