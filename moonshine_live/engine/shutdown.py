"""SIGTERM and Ctrl+C stop a running engine cleanly instead of killing the process.

Without this, SIGTERM (`systemctl stop`, `docker stop`, `kill`) ended the process where it stood
and Ctrl+C cancelled the event loop: a `listen --json` consumer never saw `stopped`, and an action
being dispatched was cut off. With it, the first signal stops the engine the way the end of a file
does (the device is closed, running actions get their drain time, `stopped` is emitted with the
signal as its reason); a second one while stopping ends the process at once.
"""

from __future__ import annotations

import asyncio
import signal
from types import TracebackType
from typing import Protocol

STOP_REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class Stoppable(Protocol):
    async def stop(self, reason: str = ...) -> None: ...


class StopOnSignals:
    """While the block runs, SIGINT and SIGTERM call `engine.stop`; `received` names the first.

    A signal the process was started with ignored (a background job's SIGINT, `nohup`'s SIGHUP
    kin) stays ignored, as the shell meant.
    """

    def __init__(self, engine: Stoppable) -> None:
        self._engine = engine
        self._installed: list[signal.Signals] = []
        self._stopping: asyncio.Task[None] | None = None
        self.received: signal.Signals | None = None

    async def __aenter__(self) -> StopOnSignals:
        loop = asyncio.get_running_loop()
        for sig in STOP_REASONS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                loop.add_signal_handler(sig, self._on_signal, sig)
                self._installed.append(sig)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)  # SIGINT goes back to KeyboardInterrupt
        self._installed = []
        if self._stopping is not None:
            await self._stopping

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # asked twice: no more waiting
        self.received = sig
        self._stopping = asyncio.get_running_loop().create_task(
            self._engine.stop(STOP_REASONS[sig]), name="stop on signal"
        )

    @property
    def exit_status(self) -> int | None:
        """130 after Ctrl+C, as shells expect; a requested stop (SIGTERM) is a success."""
        if self.received is None:
            return None
        return 128 + signal.SIGINT if self.received == signal.SIGINT else 0
