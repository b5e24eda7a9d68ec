"""What an application hooks into an engine: callbacks per event type, intent and grammar
`call` action, and the grammar's run-time mode and contexts."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..commands import CommandStage
from ..commands.dispatcher import Callback, Dispatcher
from ..errors import ConfigError
from ..events import EVENT_TYPES

_LOGGER = logging.getLogger(__name__)


class Callbacks:
    """The registration half of `Engine` (its base): decorators that file callbacks with the
    dispatcher, which runs them isolated from the pipeline."""

    def __init__(self, commands: CommandStage | None, dispatcher: Dispatcher) -> None:
        self.commands = commands
        self._dispatcher = dispatcher

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
