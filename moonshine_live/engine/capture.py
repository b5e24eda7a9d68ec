"""Reading the source to its end: back-pressure for sources that can wait, reconnection for
those that can be reopened (a microphone that dies mid-stream), errors as events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from ..capture.sources import AudioSource, SourceTraits
from ..errors import AudioDeviceError
from .config import EngineConfig

_LOGGER = logging.getLogger(__name__)

BACKLOG_POLL_S = 0.005
"""How often a waiting file source looks whether the model caught up (seconds)."""


class CaptureLoop:
    """Feeds every frame of `source` to `consume(frame, start_sample)` on one timeline.

    `position()` is the pipeline's sample count (the end of the last frame consumed); a reopened
    source restarts its own count, so its frames are mapped onto ours. `backlog()` is how many
    utterances wait for the model: a source that is not real time waits while it is full.
    """

    def __init__(
        self,
        source: AudioSource,
        traits: SourceTraits,
        config: EngineConfig,
        *,
        position: Callable[[], int],
        consume: Callable[[np.ndarray, int], None],
        flush: Callable[[], None],
        backlog: Callable[[], int],
        report: Callable[[str, bool], None],
    ) -> None:
        """`flush()` ends the utterance in progress (the device died, or the source ended);
        `report(message, fatal)` tells the user."""
        self.source = source
        self.traits = traits
        self.config = config
        self._position, self._consume, self._flush = position, consume, flush
        self._backlog, self._report = backlog, report
        self.failed = False

    async def run(self) -> None:
        """Read the source to its end. A reopenable source that dies mid-stream is reopened up
        to `reconnect_attempts` times; one that never delivered (no such device) is fatal."""
        attempts = 0
        while True:
            position = self._position()
            try:
                await self._read()
                break
            except asyncio.CancelledError:
                raise
            except AudioDeviceError as exc:
                self._flush()
                attempts = 1 if self._position() > position else attempts + 1
                retry = self.traits.reopenable and self._position() > 0
                if not retry or attempts > self.config.reconnect_attempts:
                    self._fail(str(exc))
                    break
                self._report(f"{exc}; reopening ({attempts})", False)
                await asyncio.sleep(self.config.reconnect_delay_s)
            except Exception as exc:
                _LOGGER.exception("capture failed")
                self._fail(f"capture failed: {exc}")
                break
        self._flush()

    def _fail(self, message: str) -> None:
        self.failed = True
        self._report(message, True)

    async def _read(self) -> None:
        source = self.source
        can_wait = not self.traits.realtime
        # maps the source's sample count onto ours (a rewound source restarts it); a source
        # with a history keeps one timeline, which the segmenter reads by those very indices
        offset: int | None = 0 if self.traits.history is not None else None
        async with source:
            async for frame in source:
                if offset is None:
                    offset = self._position() - source.frame_start
                self._consume(frame, offset + source.frame_start)
                if can_wait:
                    while self._backlog() >= self.config.max_pending:
                        await asyncio.sleep(BACKLOG_POLL_S)
