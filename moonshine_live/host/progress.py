"""One line on stderr for each slow step of a first start: what runs, about how long it takes,
and how long it took; on a terminal, a bar that fills as it goes.

Why: a first start converts the model and compiles for this CPU, minutes on a small machine.
Without a word it looks hung; as log records ("WARNING moonshine_live...: ...") or torch's
own warnings it reads as something broken. Later starts load what was built and say nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

BAR_WIDTH = 24
REDRAW_S = 0.25


class Step:
    """A step in progress; `advance(fraction)` for work that knows how far it is."""

    def __init__(self, what: str, expected_s: float, stream: TextIO) -> None:
        self.what = what
        self.expected_s = expected_s
        self.stream = stream
        self.started = time.monotonic()
        self.fraction: float | None = None  # None: estimated from the elapsed time
        self.terminal = _is_terminal(stream)
        self._lock = threading.Lock()

    def advance(self, fraction: float) -> None:
        self.fraction = min(max(fraction, 0.0), 1.0)
        self.draw()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def draw(self) -> None:
        if not self.terminal:
            return
        elapsed = self.elapsed_s()
        fraction = self.fraction
        if fraction is None:  # time-based; never full before the work is
            fraction = min(elapsed / self.expected_s, 0.95) if self.expected_s else 0.0
        filled = int(BAR_WIDTH * fraction)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        with self._lock:
            self.stream.write(f"\r{self._head()} [{bar}] {elapsed:.0f} s")
            self.stream.flush()

    def finish(self, ok: bool) -> None:
        outcome = f"{'done' if ok else 'failed'} in {self.elapsed_s():.0f} s"
        # on a terminal the bar is overwritten (and the rest of the line cleared)
        line = f"\r{self._head()} {outcome}\x1b[K\n" if self.terminal else f" {outcome}\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()

    def _head(self) -> str:
        return f"moonshine-live: {self.what} (once, about {_duration(self.expected_s)})..."


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


@contextmanager
def first_start_step(what: str, expected_s: float, stream: TextIO | None = None) -> Iterator[Step]:
    """Report the slow step `what` (expected to take about `expected_s` seconds) on one line.

    Not a terminal: the line is written when the step starts and ends when it does
    ("moonshine-live: compiling ... (once, about 60 s)... done in 48 s"). A terminal: the
    line is redrawn with a bar until the step ends.
    """
    step = Step(what, expected_s, stream or sys.stderr)
    stop = threading.Event()
    ticker = None
    if step.terminal:
        step.draw()

        def tick() -> None:
            while not stop.wait(REDRAW_S):
                step.draw()

        ticker = threading.Thread(target=tick, name="moonshine-progress", daemon=True)
        ticker.start()
    else:
        step.stream.write(step._head())
        step.stream.flush()
    ok = False
    try:
        yield step
        ok = True
    finally:
        stop.set()
        if ticker is not None:
            ticker.join()
        step.finish(ok)
