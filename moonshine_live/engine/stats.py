"""The engine's running figures: counters since the start and CPU use between two reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..events import Stats


@dataclass
class Counters:
    """What happened to the utterances so far (each is counted once, when its fate is known)."""

    utterances: int = 0
    """Utterances the segmenter closed."""
    transcribed: int = 0
    """Of those, transcribed (or decided by an early commit that stood for the whole)."""
    dropped: int = 0
    """Of those, dropped unheard because the model fell behind (`EngineConfig.max_pending`)."""
    compute_s: float = 0.0
    """Time the model spent on them, partials and early attempts included (seconds)."""
    _since: tuple[float, float] = field(default_factory=lambda: _clocks())

    def restart_clocks(self) -> None:
        """The CPU figure of the next report covers the time from now."""
        self._since = _clocks()

    def report(self, position_s: float, queue: int, overruns: int) -> Stats:
        """A `stats` event: CPU since the last report, everything else since the start."""
        wall, cpu = _clocks()
        last_wall, last_cpu = self._since
        self._since = (wall, cpu)
        return Stats(
            t=position_s,
            audio_s=position_s,
            utterances=self.utterances,
            transcribed=self.transcribed,
            dropped=self.dropped,
            queue=queue,
            rtf=self.compute_s / max(position_s, 1e-6),
            cpu_percent=100.0 * (cpu - last_cpu) / max(wall - last_wall, 1e-6),
            overruns=overruns,
        )


def _clocks() -> tuple[float, float]:
    return time.monotonic(), time.process_time()
