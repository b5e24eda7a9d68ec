"""Shared fixtures: data paths, the converted checkpoint, and `require()` for system parts.

A test that needs a system part (a Debian tool, the reference library, the audio server) skips on a
user's machine when the part is missing, but FAILS under CI=true so CI always exercises it. A CPU
feature is not a part (`require_cpu`): its tests skip wherever it is absent, CI included.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TESTS_DIR = Path(__file__).parent
DATA_DIR = TESTS_DIR / "data"
GENERATED_DIR = TESTS_DIR / ".generated"


def require(part: str, available: bool, why: str = "") -> None:
    """Skip (user machine) or fail (CI) when `part` is not available."""
    if available:
        return
    message = f"{part} is not available{': ' + why if why else ''}"
    if IN_CI:
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


def require_cpu(feature: str, available: bool, why: str = "") -> None:
    """Skip, everywhere and under CI=true too, when the CPU lacks `feature` (AMX, AVX2,
    AVX-512, a GPU): nobody can install one. The path without it is what that machine tests."""
    if not available:
        pytest.skip(f"this CPU has no {feature}{': ' + why if why else ''}")


def require_tool(name: str) -> str:
    """Path of an executable on PATH, or skip/fail through `require`."""
    path = shutil.which(name)
    require(name, path is not None, "install it (see .ci/run)")
    assert path is not None
    return path


def require_module(name: str) -> None:
    require(f"python module {name}", importlib.util.find_spec(name) is not None)


@pytest.fixture(scope="session")
def transcriber():
    """One warm Transcriber on the embedded default model as the live engine runs it (compiled
    decode step, int8 decoder weights), shared by every test."""
    from moonshine_live.asr.config import DecodeConfig
    from moonshine_live.asr.transcriber import Transcriber

    return Transcriber(DecodeConfig(compile=True))


@pytest.fixture(scope="session")
def beckett_path() -> Path:
    """The moonshine-cpp wheel's sample clip (9.96 s, "Ever tried. Ever failed. ...")."""
    from moonshine_live.checkpoint.ort_weights import locate_moonshine_cpp_files
    from moonshine_live.errors import WeightsError

    try:
        return locate_moonshine_cpp_files().sample_wav
    except WeightsError as exc:
        require("moonshine-cpp", False, str(exc))
        raise


@pytest.fixture(scope="session")
def generated_dir() -> Path:
    GENERATED_DIR.mkdir(exist_ok=True)
    return GENERATED_DIR


@pytest.fixture
def cli(monkeypatch, capsys, transcriber):
    """Run `main(argv)` -> (exit code, stdout, stderr) on the shared warm model."""
    from dataclasses import replace

    from moonshine_live.asr import transcriber as transcriber_module
    from moonshine_live.asr.config import DecodeConfig
    from moonshine_live.cli import main

    def reuse(config=None, **kwargs):
        # listen/demo compile by default, transcribe if cached: all get the shared model
        assert replace(config, compile=None) == DecodeConfig() and not kwargs, (config, kwargs)
        return transcriber

    monkeypatch.setattr(transcriber_module, "Transcriber", reuse)
    capsys.readouterr()

    def run(*argv: str | Path) -> tuple[int, str, str]:
        code = main([str(arg) for arg in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def engine_events(engine, timeout_s: float) -> list:
    """Every event of one whole engine run (`ready` to `stopped`), in order, within timeout_s."""
    events = []

    async def collect() -> None:
        async with engine:
            async for event in engine.events():
                events.append(event)

    await asyncio.wait_for(collect(), timeout_s)
    return events


def decisions(events: list) -> list[tuple]:
    """(transcript, its command or rejected) for every transcript of a run with a grammar,
    asserting that each one ends in exactly one of them, before the next transcript."""
    pairs: list[tuple] = []
    pending = None
    for event in events:
        if event.type == "transcript":
            assert pending is None, f"undecided transcript: {pending.to_json()}"
            pending = event
        elif event.type in ("command", "rejected"):
            assert pending is not None, f"a decision without its transcript: {event.to_json()}"
            assert event.t_start == pending.t_start, (pending.to_json(), event.to_json())
            pairs.append((pending, event))
            pending = None
    assert pending is None, f"undecided transcript: {pending.to_json()}"
    return pairs


# The PulseAudio null-sink microphone fixture (audio_server imports the helpers above).
from audio_server import virtual_mic  # noqa: E402, F401
