"""Event fan-out: every subscriber's queue and every registered callback gets each event.

A slow `events()` reader loses its oldest events rather than growing memory; callbacks run
through the dispatcher, isolated from the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from ..events import Event
from .dispatcher import Dispatcher

SUBSCRIBER_QUEUE = 1000  # events held for a slow reader before the oldest go


class EventBus:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._queues: list[asyncio.Queue[Event | None]] = []
        self._sticky: Event | None = None  # `ready`: replayed to late subscribers
        # Until someone subscribes, events are kept for them: a source that fails at once
        # must not have its error lost before `async for event in engine.events()` starts.
        self._backlog: deque[Event] | None = deque(maxlen=SUBSCRIBER_QUEUE)
        self.closed = False

    def emit(self, event: Event, sticky: bool = False) -> None:
        if sticky:
            self._sticky = event
        if self._backlog is not None:
            self._backlog.append(event)
        for queue in self._queues:
            _put(queue, event)
        if self.dispatcher.has(event.type):
            self.dispatcher.dispatch(event.type, event)

    async def subscribe(self) -> AsyncIterator[Event]:
        """Events from now on (plus the sticky one), until `close()`."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        if self._backlog is not None:
            for event in self._backlog:
                queue.put_nowait(event)
            self._backlog = None
        elif self._sticky is not None:
            queue.put_nowait(self._sticky)
        if self.closed:
            queue.put_nowait(None)
        self._queues.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.remove(queue)

    def close(self) -> None:
        """End every subscription (after the events already queued)."""
        self.closed = True
        for queue in self._queues:
            _put(queue, None)


def _put(queue: asyncio.Queue[Event | None], item: Event | None) -> None:
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(item)
