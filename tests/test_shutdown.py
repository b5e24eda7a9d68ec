"""SIGTERM and Ctrl+C stop `listen` cleanly: `stopped` is printed with the signal as its reason.

The command runs in a real process on a file played in real time, so the signal arrives while it
is listening; the stop's position on the audio timeline shows it did not run to the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from moonshine_live.engine.shutdown import StopOnSignals

STARTUP_TIMEOUT_S = 300  # a cold start converts the weights and builds the compiled step


@pytest.mark.needs_weights
@pytest.mark.parametrize(
    ("sig", "code", "reason"),
    [(signal.SIGTERM, 0, "terminated"), (signal.SIGINT, 130, "interrupted")],
    ids=["sigterm", "sigint"],
)
def test_signal_stops_listen_cleanly(beckett_path: Path, sig, code, reason) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "moonshine_live", "listen", "--file", str(beckett_path),
         "--realtime", "--json", "--no-partials"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # as a terminal's foreground job has it (a background test run passes SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        assert '"type": "ready"' in first, first + process.stderr.read()
        lines = []
        for line in process.stdout:  # wait for speech to be under way: the first transcript
            lines.append(json.loads(line))
            if lines[-1]["type"] == "transcript":
                break
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    lines += [json.loads(line) for line in out.splitlines()]
    assert process.returncode == code, err
    assert "Traceback" not in err, err
    stopped = lines[-1]
    assert stopped["type"] == "stopped" and stopped["reason"] == reason, lines
    assert stopped["t"] < 8.0, stopped  # beckett.wav is 10 s: the signal cut it short


class SlowToStop:
    """An engine whose stop never finishes (a wedged device, say)."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    async def stop(self, reason: str = "stopped") -> None:
        self.reasons.append(reason)
        await asyncio.Event().wait()


def test_a_second_signal_ends_a_stop_that_hangs() -> None:
    engine = SlowToStop()

    async def run() -> None:
        async with StopOnSignals(engine):
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.2)
            assert engine.reasons == ["terminated"]
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(5)  # not reached: the second signal raises

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run())
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone


def test_an_ignored_signal_stays_ignored() -> None:
    """A job started with SIGINT ignored (`cmd &` in a script) keeps ignoring it."""

    class Engine:
        async def stop(self, reason: str = "stopped") -> None:
            raise AssertionError(f"stopped on {reason}")

    async def run() -> StopOnSignals:
        async with StopOnSignals(Engine()) as signals:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.2)
        return signals

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        signals = asyncio.run(run())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert signals.received is None and signals.exit_status is None
