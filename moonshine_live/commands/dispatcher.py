"""Runs user callbacks for events and commands, isolated from the engine and from each other.

Sync callbacks run in a small thread pool, async ones as tasks; each gets a timeout. A callback
that raises or hangs is logged and reported, and the engine carries on. An optional per-intent
cooldown, on the audio timeline, holds back a command heard again right after itself (an echo).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

_LOGGER = logging.getLogger(__name__)

Callback = Callable[[Any], Any] | Callable[[Any], Awaitable[Any]]
ErrorSink = Callable[[str], None]


@dataclass(frozen=True)
class DispatchConfig:
    callback_timeout_s: float = 10.0
    """A callback still running after this long is reported (seconds)."""
    cooldown_ms: int = 0
    """Hold back a command whose utterance starts less than this long after the previous
    command of the same intent ended (milliseconds of audio, 0 = off: the default). Off, because
    nothing in the engine needs it (an early commit and its final are deduplicated by the
    engine) and a deliberate repeat ("next track", "next track") must come through; turn it on
    where speakers echo the engine's own feedback into the microphone. A command held back is
    reported as `rejected` with reason `cooldown`."""
    threads: int = 4
    """Threads for sync callbacks, so a slow one does not hold up the others."""

    def __post_init__(self) -> None:
        if self.callback_timeout_s <= 0:
            raise ConfigError(
                f"DispatchConfig.callback_timeout_s must be > 0, got {self.callback_timeout_s}"
            )
        if self.cooldown_ms < 0:
            raise ConfigError(f"DispatchConfig.cooldown_ms must be >= 0, got {self.cooldown_ms}")
        if self.threads < 1:
            raise ConfigError(f"DispatchConfig.threads must be >= 1, got {self.threads}")


class Dispatcher:
    """A registry of callbacks by name, and the machinery to run them safely."""

    def __init__(self, config: DispatchConfig | None = None, on_error: ErrorSink | None = None):
        self.config = config or DispatchConfig()
        self._callbacks: dict[str, list[Callback]] = defaultdict(list)
        self._executor = ThreadPoolExecutor(self.config.threads, thread_name_prefix="callback")
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_fired: dict[str, float] = {}
        self._on_error = on_error or (lambda message: None)

    def register(self, name: str, callback: Callback) -> None:
        if not callable(callback):
            raise TypeError(f"callback for {name!r} is not callable: {callback!r}")
        self._callbacks[name].append(callback)

    def has(self, name: str) -> bool:
        return bool(self._callbacks.get(name))

    def cooling_down(self, intent: str, t_start: float, t_end: float) -> bool:
        """True (and nothing recorded) when an utterance of `intent` from t_start to t_end (audio
        seconds) starts less than cooldown_ms after the last one dispatched ended. Audio time,
        not wall time: a file read at full speed gives what it gives in real time."""
        if not self.config.cooldown_ms:
            return False
        last_end = self._last_fired.get(intent)
        if last_end is not None and (t_start - last_end) * 1000 < self.config.cooldown_ms:
            return True
        self._last_fired[intent] = t_end
        return False

    def dispatch(self, name: str, payload: Any) -> int:
        """Start every callback registered under `name`; returns how many were started."""
        callbacks = self._callbacks.get(name, ())
        for callback in callbacks:
            task = asyncio.get_running_loop().create_task(self._run(name, callback, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(callbacks)

    async def _run(self, name: str, callback: Callback, payload: Any) -> None:
        label = f"{name!r} callback {getattr(callback, '__qualname__', callback)!r}"
        try:
            if inspect.iscoroutinefunction(callback):
                call = callback(payload)
            else:
                loop = asyncio.get_running_loop()
                call = loop.run_in_executor(self._executor, callback, payload)
            result = await asyncio.wait_for(call, self.config.callback_timeout_s)
            if inspect.isawaitable(result):  # a sync function that returned a coroutine
                await asyncio.wait_for(result, self.config.callback_timeout_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._report(f"{label} timed out after {self.config.callback_timeout_s} s")
        except Exception as exc:
            _LOGGER.exception("%s raised", label)
            self._report(f"{label} raised {type(exc).__name__}: {exc}")

    def _report(self, message: str) -> None:
        _LOGGER.error("%s", message)
        try:
            self._on_error(message)
        except Exception:  # the error sink must never take the dispatcher down
            _LOGGER.exception("error sink failed")

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for callbacks still running (used at shutdown)."""
        if self._tasks:
            await asyncio.wait(
                set(self._tasks), timeout=timeout_s or self.config.callback_timeout_s
            )

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
