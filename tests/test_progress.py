"""The first start's progress lines: one line per slow step, a bar only on a terminal."""

from __future__ import annotations

import io

import pytest

from moonshine_live.host import progress
from moonshine_live.host.progress import first_start_step


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_one_line_per_step() -> None:
    stream = io.StringIO()
    with first_start_step("compiling the decode step for this CPU", 60, stream) as step:
        step.advance(0.5)  # no redraw off a terminal
    assert stream.getvalue() == (
        "moonshine-live: compiling the decode step for this CPU (once, about 60 s)... done in 0 s\n"
    )


def test_a_terminal_gets_a_bar_that_ends_on_the_same_line(monkeypatch) -> None:
    monkeypatch.setattr(progress, "REDRAW_S", 0.01)
    stream = Terminal()
    with first_start_step("converting the embedded Moonshine base model", 5, stream) as step:
        step.advance(0.5)
    text = stream.getvalue()
    assert "[" + "#" * (progress.BAR_WIDTH // 2) + "-" * (progress.BAR_WIDTH // 2) + "]" in text
    assert text.count("\n") == 1 and text.endswith("done in 0 s\x1b[K\n")
    assert text.startswith("\rmoonshine-live: converting the embedded Moonshine base model")


def test_a_failed_step_says_so_and_raises() -> None:
    stream = io.StringIO()
    step = first_start_step("compiling the encoder for this CPU", 120, stream)
    with pytest.raises(RuntimeError, match="no compiler"), step:
        raise RuntimeError("no compiler")
    assert stream.getvalue().endswith("(once, about 2 min)... failed in 0 s\n")
