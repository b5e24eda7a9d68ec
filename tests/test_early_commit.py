"""Early commit: an exact command is acted on after a short pause, not after the whole hangover.

Speech is real TTS read in real time (early commit needs a live source), through the real VAD
and model. Where it happened is read off the audio timeline (the transcript's `t_end`), which
does not depend on how fast this machine is.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import decisions, engine_events
from speech import tts_wav

from moonshine_live.capture.audio import SAMPLE_RATE, load_audio
from moonshine_live.capture.sources import ArraySource
from moonshine_live.commands.actions import ActionConfig
from moonshine_live.commands.bus import EventBus
from moonshine_live.commands.dispatcher import DispatchConfig, Dispatcher
from moonshine_live.commands.stage import CommandConfig, CommandStage
from moonshine_live.engine.engine import Engine, EngineConfig
from moonshine_live.errors import ConfigError
from moonshine_live.events import CommandEvent, Event, TranscriptEvent
from moonshine_live.segment.vad import VadConfig

TIMEOUT = 60.0
COMMANDS = CommandConfig(grammars=("desktop",), actions=ActionConfig(dry_run=True))


def voiced(path: Path) -> np.ndarray:
    """The clip without the silence TTS puts around it, so pauses are what the test says."""
    audio = load_audio(path)
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return audio[loud[0] : loud[-1] + 1]


def with_pauses(*parts: np.ndarray | float) -> np.ndarray:
    pieces = [np.zeros(round(p * SAMPLE_RATE), np.float32) if isinstance(p, float) else p
              for p in parts]  # fmt: skip
    return np.concatenate(pieces)


async def run(
    audio: np.ndarray, transcriber, realtime: bool = True, **overrides
) -> tuple[list[Event], dict]:
    config = EngineConfig(commands=COMMANDS, stats_interval_s=0, partial_interval_ms=0, **overrides)
    engine = Engine(config, source=ArraySource(audio, realtime=realtime), transcriber=transcriber)
    events = await engine_events(engine, TIMEOUT)
    decisions(events)  # early or not, each transcript ends in one command or rejected
    return events, engine.stats().__dict__


def of_type(events: list[Event], kind: str) -> list:
    return [e for e in events if e.type == kind]


@pytest.fixture(scope="module")
def close_window() -> np.ndarray:
    return voiced(tts_wav("close the window", "flite", variant="slt"))


@pytest.mark.needs_weights
@pytest.mark.needs_tts
async def test_an_exact_command_is_acted_on_before_the_hangover_ends(
    transcriber, close_window
) -> None:
    audio = with_pauses(0.6, close_window, 1.0)
    waited, _ = await run(audio, transcriber)
    early, stats = await run(audio, transcriber, early_commit_ms=120)
    (late,) = of_type(waited, "transcript")
    (transcript,) = of_type(early, "transcript")
    assert late.reason == "silence" and transcript.reason == "early"
    assert transcript.text == late.text and transcript.t_start == late.t_start
    # the early one was taken about 180 ms sooner on the timeline (hangover 300 ms vs 120)
    assert transcript.t_end <= late.t_end - 0.1, (transcript, late)
    (command,) = of_type(early, "command")
    assert command.intent == "close_window" and command.t_end == transcript.t_end
    assert early.index(transcript) < early.index(command)
    assert stats["utterances"] == 1 and stats["transcribed"] == 1


@pytest.mark.needs_weights
@pytest.mark.needs_tts
async def test_speech_that_resumes_is_transcribed_whole_and_the_command_not_repeated(
    transcriber, close_window
) -> None:
    """A pause longer than the early commit but shorter than the hangover, then more words."""
    please = voiced(tts_wav("please", "flite", variant="slt"))
    audio = with_pauses(0.6, close_window, 0.45, please, 1.2)
    vad = VadConfig(hangover_ms=750, post_roll_ms=300)
    events, stats = await run(audio, transcriber, early_commit_ms=150, vad=vad)
    first, whole = of_type(events, "transcript")
    assert first.reason == "early" and whole.reason == "silence"
    assert whole.t_start == first.t_start and whole.t_end > first.t_end + 0.5
    assert "window" in whole.text.lower() and "please" in whole.text.lower(), whole.text
    # "close the window, please" is the same command again: matched, but not dispatched twice
    commands = of_type(events, "command")
    assert [c.intent for c in commands] == ["close_window"], [e.to_json() for e in events]
    (again,) = of_type(events, "rejected")  # said, not dropped in silence
    assert (again.reason, again.best_intent, again.text) == (
        "committed_early",
        "close_window",
        whole.text,
    )
    assert stats["utterances"] == 1 and stats["transcribed"] == 1


@pytest.mark.needs_weights
@pytest.mark.needs_tts
async def test_speech_that_is_not_exactly_a_command_waits_for_the_hangover(transcriber) -> None:
    audio = with_pauses(0.6, voiced(tts_wav("what a lovely day", "flite", variant="slt")), 1.0)
    events, _ = await run(audio, transcriber, early_commit_ms=120)
    (transcript,) = of_type(events, "transcript")
    assert transcript.reason == "silence"
    assert not of_type(events, "command")


@pytest.mark.needs_weights
@pytest.mark.needs_tts
async def test_a_file_read_at_full_speed_never_commits_early(transcriber, close_window) -> None:
    """Early commit races the hangover in real time; a file read as fast as possible would make
    the event stream depend on the machine's speed, so it is off there."""
    audio = with_pauses(0.6, close_window, 1.0)
    events, _ = await run(audio, transcriber, early_commit_ms=120, realtime=False)
    (transcript,) = of_type(events, "transcript")
    assert transcript.reason == "silence"
    assert [c.intent for c in of_type(events, "command")] == ["close_window"]


class SlowCPU:
    """The real transcriber on a machine where an utterance takes `delay_s` longer: the early
    attempt is still being decoded when the hangover ends."""

    def __init__(self, transcriber, delay_s: float) -> None:
        self.transcriber, self.delay_s, self.calls = transcriber, delay_s, 0

    def transcribe(self, *args):
        self.calls += 1
        time.sleep(self.delay_s)
        return self.transcriber.transcribe(*args)


@pytest.mark.needs_weights
@pytest.mark.needs_tts
async def test_an_early_attempt_slower_than_the_hangover_still_commits(
    transcriber, close_window
) -> None:
    """What the feature guarantees on any machine: the decision is taken on the audio after
    early_commit_ms of silence, and it stands however long the decode takes; the whole
    utterance is then not transcribed again."""
    slow = SlowCPU(transcriber, delay_s=0.45)  # 120 ms + 450 ms > the 300 ms hangover
    audio = with_pauses(0.6, close_window, 1.0)
    events, stats = await run(audio, slow, early_commit_ms=120)
    (transcript,) = of_type(events, "transcript")
    assert transcript.reason == "early" and transcript.t_end < 0.6 + len(close_window) / 16000 + 0.3
    assert [c.intent for c in of_type(events, "command")] == ["close_window"]
    assert stats["utterances"] == 1 and stats["transcribed"] == 1 and slow.calls == 1


@pytest.mark.needs_weights
@pytest.mark.needs_tts
async def test_a_slow_early_attempt_that_is_no_command_leaves_it_to_the_final(transcriber) -> None:
    slow = SlowCPU(transcriber, delay_s=0.45)
    audio = with_pauses(0.6, voiced(tts_wav("what a lovely day", "flite", variant="slt")), 1.0)
    events, stats = await run(audio, slow, early_commit_ms=120)
    (transcript,) = of_type(events, "transcript")
    assert transcript.reason == "silence" and not of_type(events, "command")
    assert [e.type for e in events].count("rejected") == 1
    assert stats["utterances"] == 1 and stats["transcribed"] == 1 and slow.calls == 2


@pytest.mark.parametrize("ms", [-1, 300, 450])
def test_early_commit_must_be_shorter_than_the_hangover(ms: int) -> None:
    with pytest.raises(ConfigError, match="early_commit_ms"):
        EngineConfig(early_commit_ms=ms, vad=VadConfig(hangover_ms=300))


def attached_stage() -> tuple[CommandStage, Dispatcher]:
    """A command stage on a bus of its own, no cooldown: what it dispatches is what it decided."""
    stage = CommandStage(COMMANDS)
    dispatcher = Dispatcher(DispatchConfig(cooldown_ms=0))
    stage.attach(EventBus(dispatcher))
    return stage, dispatcher


async def test_a_command_done_early_is_not_dispatched_again_but_another_one_is() -> None:
    stage, dispatcher = attached_stage()
    dispatched: list[str] = []
    dispatcher.register("intent:close_window", lambda c: dispatched.append(c.intent))
    dispatcher.register("intent:maximize_window", lambda c: dispatched.append(c.intent))

    def said(text: str) -> TranscriptEvent:
        return TranscriptEvent(text=text, t_start=0.0, t_end=1.0, latency_ms=0.0)

    done = stage.match(said("close the window"), exact_only=True)
    assert isinstance(done, CommandEvent)
    assert stage.match(said("close the window pleaze"), exact_only=True) is None  # fuzzy
    stage.handle(said("close the window please"), done=done)  # the same command, with more
    stage.handle(said("maximize the window"), done=done)
    await stage.wait_actions()
    await dispatcher.drain(timeout_s=5.0)
    assert dispatched == ["maximize_window"]


async def test_the_stage_remembers_what_it_fired_for_an_utterance() -> None:
    """One place keeps a command from firing twice: the stage. The same command from the same
    utterance (an early commit, then its final) is held back; from the next utterance it fires."""
    stage, dispatcher = attached_stage()
    held: list[str] = []
    dispatcher.register("rejected", lambda e: held.append(e.reason))
    dispatched: list[float] = []
    dispatcher.register("intent:close_window", lambda c: dispatched.append(c.t_start))

    def said(text: str, t: float) -> TranscriptEvent:
        return TranscriptEvent(text=text, t_start=t, t_end=t + 1.0, latency_ms=0.0)

    early = stage.match(said("close the window", 2.0), exact_only=True)
    assert isinstance(early, CommandEvent) and stage.dispatch(early)
    assert stage.fired(early)
    stage.handle(said("close the window please", 2.0))  # its final: the same command
    stage.handle(said("close the window", 5.0))  # said again, a new utterance
    await stage.wait_actions()
    await dispatcher.drain(timeout_s=5.0)
    assert dispatched == [2.0, 5.0]
    assert held == ["committed_early"]


def test_listen_names_a_bad_early_commit(capsys) -> None:
    from moonshine_live.cli import EXIT_FAILED, main

    assert main(["listen", "--file", "x.wav", "--early-commit", "400"]) == EXIT_FAILED
    assert "early_commit_ms" in capsys.readouterr().err


@pytest.mark.needs_weights
@pytest.mark.needs_tts
@pytest.mark.parametrize(("blip_ms", "gain", "pause_s"), [(120, 0.4, 0.25), (90, 0.3, 0.21)])
async def test_a_second_pause_in_one_command_does_not_fire_it_again(
    transcriber, blip_ms: int, gain: float, pause_s: float
) -> None:
    """A command, a pause, a short soft sound (a breath, an echo of the last syllable) and a
    second pause, all inside the hangover: each pause gets an early attempt and both read as the
    same command, which fires once (it fired twice: the bundled recording's "take a
    screenshot" did so in `benchmarks/live.py --early-commit 150`)."""
    clip = voiced(tts_wav("take a screenshot", "flite", variant="slt"))
    envelope = np.convolve(np.abs(clip), np.ones(480) / 480, "same")
    middle, half = int(np.argmax(envelope)), blip_ms * SAMPLE_RATE // 2000
    blip = (clip[middle - half : middle + half] * gain).astype(np.float32)
    audio = with_pauses(0.5, clip, pause_s, blip, 1.2)
    events, _ = await run(audio, transcriber, early_commit_ms=150)
    assert [c.intent for c in of_type(events, "command")] == ["screenshot"]
    assert [t.reason for t in of_type(events, "transcript")] == ["early"]


PREFIX_GRAMMAR = """
[lists.app]
"firefox" = "firefox"
"firefox settings" = "firefox-settings"

[intents.open_app]
say = ["open {app}"]
slots = { app = "app" }
"""


@pytest.mark.needs_weights
@pytest.mark.needs_tts
async def test_a_command_that_more_words_could_change_does_not_fire_at_the_pause(
    transcriber, tmp_path
) -> None:
    """ "open firefox" + pause + "settings": "open firefox" is an exact command, but the grammar
    knows "settings" may follow and change it, so early commit waits at the pause (before, it
    fired "open firefox"), and the one command is the whole one."""
    grammar = tmp_path / "apps.toml"
    grammar.write_text(PREFIX_GRAMMAR)
    commands = CommandConfig(grammars=(str(grammar),), actions=ActionConfig(dry_run=True))
    assert CommandStage(commands).matcher.match("Open firefox").exact  # the pause's reading
    audio = with_pauses(
        0.6,
        voiced(tts_wav("open firefox", "flite", variant="slt")),
        0.45,
        voiced(tts_wav("settings", "flite", variant="slt")),
        1.2,
    )
    config = EngineConfig(
        commands=commands,
        stats_interval_s=0,
        partial_interval_ms=0,
        early_commit_ms=150,
        vad=VadConfig(hangover_ms=750, post_roll_ms=300),  # the pause does not end the utterance
    )
    engine = Engine(config, source=ArraySource(audio, realtime=True), transcriber=transcriber)
    events = await engine_events(engine, TIMEOUT)
    decisions(events)
    shown = [(e.type, getattr(e, "text", ""), getattr(e, "reason", "")) for e in events]
    assert [e.slots["app"] for e in events if e.type == "command"] == ["firefox-settings"], shown


def test_early_commit_waits_where_more_words_could_change_the_command(transcriber, tmp_path):
    """The check the engine makes before acting at a pause, on the tokenizer's own tokens."""
    grammar = tmp_path / "apps.toml"
    grammar.write_text(PREFIX_GRAMMAR)
    stage = CommandStage(CommandConfig(grammars=(str(grammar),)))
    assert stage.matcher.match("Open firefox").exact  # an exact command: free early commit fired
    tokens = transcriber.tokenizer.encode
    assert not stage.settled(transcriber, tokens("Open firefox"))  # "settings" may follow
    assert stage.settled(transcriber, tokens("Open firefox settings."))
    assert not stage.settled(transcriber, tokens("Open"))
