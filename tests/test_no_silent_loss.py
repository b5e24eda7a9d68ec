"""No command lost without a word: repeats come through, every transcript is decided, and a
file gives the same events read at full speed as in real time.

Real TTS speech through `listen --file` (the CLI in process, on the shared warm model) and the
engine, with the shipped desktop grammar and dry-run actions.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import decisions, engine_events
from speech import command_clips, compose, tts_wav

from moonshine_live.capture.audio import SAMPLE_RATE, load_audio, write_wav
from moonshine_live.capture.sources import ArraySource
from moonshine_live.cli import EXIT_OK
from moonshine_live.commands.actions import ActionConfig
from moonshine_live.commands.dispatcher import DispatchConfig
from moonshine_live.commands.stage import CommandConfig
from moonshine_live.engine.engine import Engine, EngineConfig

pytestmark = [pytest.mark.needs_weights, pytest.mark.needs_tts]

REPEATS, SPACING_S = 5, 2.5
CHATTER = (
    "what a lovely day it is",
    "I think we should go for a walk later",
    "the meeting moved to thursday afternoon",
    "could you tell me a story about dragons",
)


@pytest.fixture(scope="module")
def repeated_command(tmp_path_factory) -> Path:
    """ "next track" said five times, one every 2.5 s, as a WAV file."""
    clip = tts_wav("next track", "flite", variant="slt")
    gap = SPACING_S - len(load_audio(clip)) / SAMPLE_RATE
    path = tmp_path_factory.mktemp("repeats") / "next-track-x5.wav"
    write_wav(path, compose([0.5, *[clip, gap] * REPEATS]))
    return path


def listen(cli, path: Path, *flags: str) -> list[dict]:
    argv = ("listen", "--file", path, "--grammar", "desktop", "--dry-run", "--json", *flags)
    code, out, err = cli(*argv, "--no-partials")
    assert code == EXIT_OK, err
    return [json.loads(line) for line in out.splitlines()]


def test_a_command_said_five_times_gives_five_commands_at_full_speed(cli, repeated_command):
    """The cooldown once ran on wall time: read at full speed, the four repeats vanished."""
    events = listen(cli, repeated_command)
    commands = [e for e in events if e["type"] == "command"]
    assert [c["intent"] for c in commands] == ["next_track"] * REPEATS, events
    starts = [c["t_start"] for c in commands]
    assert all(abs(b - a - SPACING_S) < 0.3 for a, b in itertools.pairwise(starts)), starts


def test_a_file_gives_the_same_events_at_full_speed_and_in_real_time(cli, repeated_command):
    def said(events: list[dict]) -> list[tuple]:
        keep = ("type", "text", "t_start", "t_end", "intent", "slots", "reason")
        kinds = ("transcript", "command", "rejected")
        return [tuple(e.get(k) for k in keep) for e in events if e["type"] in kinds]

    fast = said(listen(cli, repeated_command))
    realtime = said(listen(cli, repeated_command, "--realtime"))
    assert fast == realtime
    assert sum(e[0] == "command" for e in fast) == REPEATS


async def run_engine(audio: np.ndarray, transcriber, cooldown_ms: int = 0) -> list:
    config = EngineConfig(
        commands=CommandConfig(grammars=("desktop", "home"), actions=ActionConfig(dry_run=True)),
        dispatch=DispatchConfig(cooldown_ms=cooldown_ms),
        stats_interval_s=0,
        partial_interval_ms=0,
    )
    engine = Engine(config, source=ArraySource(audio), transcriber=transcriber)
    return await engine_events(engine, 600.0)


async def test_a_held_back_repeat_is_reported_with_its_reason(transcriber, repeated_command):
    """A 3 s cooldown, counted from the end of the last command dispatched: of repeats 2.5 s
    apart every other one is held back, and each one held back is said."""
    events = await run_engine(load_audio(repeated_command), transcriber, cooldown_ms=3000)
    outcomes = [getattr(d, "reason", d.type) for _, d in decisions(events)]
    assert outcomes == ["command", "cooldown"] * (REPEATS // 2) + ["command"], outcomes


async def test_every_transcript_of_a_long_mixed_run_ends_in_one_command_or_rejected(
    transcriber,
) -> None:
    """Commands in many voices, chatter, repeats back to back, and noise bursts that transcribe
    to nothing or to stray words: each transcript is a command or a rejection, never nothing."""
    rng = np.random.default_rng(7)
    parts: list = [0.4]
    clips = command_clips(24)
    for index, (_, clip) in enumerate(clips):
        parts += [clip, float(rng.uniform(0.5, 1.2))]
        if index % 6 == 0:  # the same command again, close behind
            parts += [clip, 0.6]
        if index % 6 == 3:
            parts += [tts_wav(CHATTER[index // 6 % len(CHATTER)], "espeak"), 0.8]
    audio = compose(parts)
    bursts = [int(rng.integers(0, len(audio) - SAMPLE_RATE)) for _ in range(4)]
    noise = np.zeros_like(audio)
    for start in bursts:  # loud 0.4 s hisses the VAD takes for speech
        noise[start : start + 6400] = rng.standard_normal(6400).astype(np.float32) * 0.3
    events = await run_engine(np.clip(audio + noise, -1, 1), transcriber)
    pairs = decisions(events)
    assert len(pairs) >= len(clips) + 4
    commands = [d for _, d in pairs if d.type == "command"]
    # how many are right is the matcher's business (test_matcher, benchmarks/commands.py)
    assert len(commands) >= len(clips) // 2, [t.text for t, _ in pairs]
    assert any(d.type == "rejected" for _, d in pairs)
