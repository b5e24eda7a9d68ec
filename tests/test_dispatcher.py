"""Callbacks run isolated: errors and hangs are reported, never raised into the engine."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from moonshine_live.commands.dispatcher import DispatchConfig, Dispatcher
from moonshine_live.errors import ConfigError

TIMEOUT = 5.0


async def test_sync_and_async_callbacks_get_the_payload() -> None:
    got: list[tuple[str, object, str]] = []
    dispatcher = Dispatcher()
    dispatcher.register("x", lambda p: got.append(("sync", p, threading.current_thread().name)))

    async def handler(payload: object) -> None:
        got.append(("async", payload, threading.current_thread().name))

    dispatcher.register("x", handler)
    assert dispatcher.dispatch("x", 42) == 2
    assert dispatcher.dispatch("nobody", 1) == 0
    await asyncio.wait_for(dispatcher.drain(), TIMEOUT)
    assert sorted(g[:2] for g in got) == [("async", 42), ("sync", 42)]
    sync_thread = next(g[2] for g in got if g[0] == "sync")
    assert sync_thread.startswith("callback")  # never on the event loop's thread
    dispatcher.close()


async def test_errors_and_timeouts_are_reported_not_raised() -> None:
    reports: list[str] = []
    dispatcher = Dispatcher(DispatchConfig(callback_timeout_s=0.2), on_error=reports.append)

    def broken(payload: object) -> None:
        raise ValueError("bad value")

    async def hangs(payload: object) -> None:
        await asyncio.sleep(10)

    dispatcher.register("x", broken)
    dispatcher.register("x", hangs)
    dispatcher.register("x", lambda p: time.sleep(1.0))  # a sync hang
    dispatcher.dispatch("x", None)
    await asyncio.wait_for(dispatcher.drain(1.0), TIMEOUT)
    assert len(reports) == 3
    assert any("ValueError: bad value" in r for r in reports)
    assert sum("timed out after 0.2 s" in r for r in reports) == 2
    dispatcher.close()


async def test_a_failing_error_sink_does_not_break_dispatch() -> None:
    def sink(message: str) -> None:
        raise RuntimeError("sink broken")

    dispatcher = Dispatcher(on_error=sink)
    dispatcher.register("x", lambda p: 1 / 0)
    dispatcher.dispatch("x", None)
    await asyncio.wait_for(dispatcher.drain(), TIMEOUT)
    dispatcher.close()


def test_cooldown_is_off_by_default_and_runs_on_the_audio_timeline() -> None:
    """Off, every repeat comes through; on, a repeat is held back by where it was said (audio
    seconds), however fast the audio was read."""
    off = Dispatcher()
    assert not any(off.cooling_down("volume", t, t + 0.5) for t in (1.0, 1.6, 1.7))
    dispatcher = Dispatcher(DispatchConfig(cooldown_ms=300))
    assert not dispatcher.cooling_down("volume", 1.0, 1.5)
    assert dispatcher.cooling_down("volume", 1.7, 2.0)  # starts 0.2 s after the first ended
    assert not dispatcher.cooling_down("mute", 1.7, 2.0)  # another intent
    assert not dispatcher.cooling_down("volume", 1.9, 2.4)  # 0.4 s after the last dispatched
    assert dispatcher.cooling_down("volume", 2.5, 2.9)
    off.close()
    dispatcher.close()


def test_bad_settings_and_callbacks_are_named() -> None:
    with pytest.raises(ConfigError, match="callback_timeout_s"):
        DispatchConfig(callback_timeout_s=0)
    with pytest.raises(ConfigError, match="cooldown_ms"):
        DispatchConfig(cooldown_ms=-1)
    with pytest.raises(TypeError, match="not callable"):
        Dispatcher().register("x", "print")  # type: ignore[arg-type]
