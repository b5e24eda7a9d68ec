"""Spoken commands end to end: TTS speech -> engine -> grammar -> callbacks and argv actions."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import engine_events
from speech import compose, tts_wav

from moonshine_live.capture.sources import ArraySource
from moonshine_live.commands.stage import (
    SETTLE_NS,
    CommandConfig,
    CommandStage,
    _settled,
    resolve_grammar_path,
)
from moonshine_live.engine.engine import Engine, EngineConfig
from moonshine_live.errors import GrammarError
from moonshine_live.events import Event, TranscriptEvent

pytestmark = [pytest.mark.needs_weights, pytest.mark.needs_tts]

TIMEOUT = 120.0
METACHARACTERS = "; rm -rf / $(touch pwned) `id` | && 'single' \"double\" * ~ \\n"

GRAMMAR = """
[lists.room]                # the value is what the action receives
"kitchen" = {value}
"bedroom" = "bedroom"

[lists.window_action]
"close" = "close"
"maximize" = "maximize"

[intents.lights_on]
say = ["turn on the {{room}} lights"]
run = [{python}, "-c", {script}, {log}, "{{room}}", "literal {{{{braces}}}}"]

[intents.window]
say = ["{{window_action}} the window"]
call = "on_window"

[intents.workspace]
say = ["switch to workspace {{number}}"]
slots = {{ number = "1..9" }}
"""


# appends its arguments (after the log path) as one JSON line
LOG_ARGV = "import json, sys; open(sys.argv[1], 'a').write(json.dumps(sys.argv[2:]) + chr(10))"


def write_grammar(path: Path, log: Path) -> Path:
    values = dict(value=METACHARACTERS, python=sys.executable, script=LOG_ARGV, log=str(log))
    path.write_text(GRAMMAR.format(**{k: json.dumps(v) for k, v in values.items()}))
    return path


async def run(engine: Engine) -> list[Event]:
    return await engine_events(engine, TIMEOUT)


def clip(text: str, voice: str = "slt") -> Path:
    return tts_wav(text, "flite", variant=voice)


async def test_spoken_commands_fire_callbacks_and_argv_actions(transcriber, tmp_path) -> None:
    log = tmp_path / "argv.jsonl"
    grammar = write_grammar(tmp_path / "test.toml", log)
    audio = compose(
        [0.5, tts_wav("turn on the kitchen lights", "espeak"), 1.2,
         clip("maximize the window", "rms"), 1.2,
         clip("switch to workspace three", "rms"), 1.2,
         clip("what a lovely day it is today"), 1.0],
        noise_db=-50,
    )  # fmt: skip
    config = EngineConfig(stats_interval_s=0, commands=CommandConfig(grammars=(str(grammar),)))
    engine = Engine(config, source=ArraySource(audio), transcriber=transcriber)
    called: dict[str, list] = {"window": [], "workspace": [], "otherwise": []}
    engine.callback("on_window")(lambda command: called["window"].append(command))

    @engine.on("workspace")
    async def workspace(command) -> None:
        called["workspace"].append(command.slots["number"])

    engine.otherwise(lambda rejected: called["otherwise"].append(rejected.text))
    events = await run(engine)
    commands = [e for e in events if e.type == "command"]
    assert [(c.intent, c.slots) for c in commands] == [
        ("lights_on", {"room": METACHARACTERS}),
        ("window", {"window_action": "maximize"}),
        ("workspace", {"number": 3}),
    ], [e.to_json() for e in events if e.type in ("transcript", "rejected")]
    assert all(c.latency_ms > 0 and c.t_end > c.t_start for c in commands)
    assert [c.intent for c in called["window"]] == ["window"]
    assert called["workspace"] == [3]
    assert len(called["otherwise"]) == 1 and "lovely" in called["otherwise"][0].lower()
    (rejected,) = [e for e in events if e.type == "rejected"]
    assert rejected.to_json()["type"] == "rejected" and rejected.reason
    # the action ran without a shell: every slot value arrived as one literal argument
    (argv,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert argv == [METACHARACTERS, "literal {braces}"]
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert not [e for e in events if e.type == "error"]


async def test_grammar_edits_apply_to_the_next_utterance_and_broken_edits_keep_the_old(
    transcriber, tmp_path
) -> None:
    grammar = write_grammar(tmp_path / "live.toml", tmp_path / "argv.jsonl")
    audio = compose(
        [
            0.5,
            clip("close the window"),
            2.5,
            clip("close the window"),
            2.5,
            clip("close the window"),
            1.0,
        ]
    )
    config = EngineConfig(
        stats_interval_s=0,
        partial_interval_ms=0,
        commands=CommandConfig(grammars=(str(grammar),), reload_interval_s=0.1),
    )
    engine = Engine(config, source=ArraySource(audio, realtime=True), transcriber=transcriber)
    engine.callback("on_window")(lambda command: None)
    edits = iter(
        [
            lambda: grammar.write_text(
                grammar.read_text().replace("[intents.window]", "[intents.shut]")
            ),
            lambda: grammar.write_text(grammar.read_text() + "\n[intents.broken\nsay = [\n"),
        ]
    )

    @engine.on("command")
    def edit(command) -> None:
        next(edits, lambda: None)()

    events = await run(engine)
    intents = [e.intent for e in events if e.type == "command"]
    assert intents == ["window", "shut", "shut"], [e.to_json() for e in events]
    errors = [e for e in events if e.type == "error"]
    assert errors and all(not e.fatal for e in errors)
    assert "live.toml" in errors[0].message and "previous one kept" in errors[0].message
    assert [e.intents for e in events if e.type == "grammar"] == [3]


def test_bad_grammar_at_start_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[intents.x]\nsay = ["open (the|a"]\n')
    with pytest.raises(GrammarError, match=r"bad.toml:2:"):
        Engine(EngineConfig(commands=CommandConfig(grammars=(str(bad),))))


def test_shipped_grammars_resolve_by_name() -> None:
    assert resolve_grammar_path("desktop").name == "desktop.toml"
    with pytest.raises(GrammarError, match="no shipped grammar"):
        resolve_grammar_path("nonexistent")
    stage = CommandStage(CommandConfig(grammars=("desktop", "home")))
    event = TranscriptEvent(text="Open fire, fox.", t_start=1.0, t_end=2.0, latency_ms=100.0)
    command = stage.match(event)
    assert command.type == "command" and command.intent == "open_app"
    assert command.slots == {"app": "firefox"} and command.latency_ms >= 100.0


MODE_GRAMMAR = """
[intents.sleep]
say = "go to sleep"
set_mode = "sleep"

[intents.wake_up]
say = "wake up"
set_mode = "command"
mode = "sleep"

[intents.next_track]
say = "next track"
"""


async def test_matching_changes_nothing_and_a_dispatched_command_switches_the_mode(
    tmp_path,
) -> None:
    """`match` only looks; the mode changes when a command is dispatched, and a command the
    cooldown holds back has no effect."""
    from moonshine_live.commands.bus import EventBus
    from moonshine_live.commands.dispatcher import DispatchConfig, Dispatcher
    from moonshine_live.grammar import DEFAULT_MODE

    grammar = tmp_path / "modes.toml"
    grammar.write_text(MODE_GRAMMAR)
    stage = CommandStage(CommandConfig(grammars=(str(grammar),), run_actions=False))
    dispatcher = Dispatcher(DispatchConfig(cooldown_ms=5000))
    bus = EventBus(dispatcher)
    stage.attach(bus)
    events: list[Event] = []
    dispatcher.register("command", events.append)
    dispatcher.register("rejected", events.append)

    def said(text: str, t: float) -> TranscriptEvent:
        return TranscriptEvent(text=text, t_start=t, t_end=t + 1.0, latency_ms=10.0)

    assert stage.match(said("go to sleep", 1.0)).type == "command"
    assert stage.mode == DEFAULT_MODE  # matching alone switched nothing
    stage.handle(said("go to sleep", 1.0))
    assert stage.mode == "sleep"
    stage.handle(said("next track", 3.0))  # not active while asleep
    stage.handle(said("wake up", 5.0))
    assert stage.mode == DEFAULT_MODE
    stage.handle(said("go to sleep", 6.0))  # within the cooldown: held back, still awake
    assert stage.mode == DEFAULT_MODE
    await stage.wait_actions()
    await dispatcher.drain()
    kinds = [(e.type, getattr(e, "intent", None) or e.reason) for e in events]
    assert kinds[0] == ("command", "sleep") and kinds[2] == ("command", "wake_up"), kinds
    assert kinds[1][0] == "rejected" and kinds[3] == ("rejected", "cooldown"), kinds
    dispatcher.close()


def test_a_half_written_grammar_is_not_loaded(tmp_path) -> None:
    """An edit seen mid-write (the file truncated, not yet written back) must not replace the
    grammar: only a file unchanged for SETTLE_NS is loaded, so the finished edit is what loads."""
    grammar = write_grammar(tmp_path / "live.toml", tmp_path / "argv.jsonl")
    stage = CommandStage(CommandConfig(grammars=(str(grammar),)))
    intents = set(stage.grammar.intents)
    old_text = grammar.read_text()

    grammar.write_text("")  # an editor that truncates, then writes
    assert stage.reload_if_changed() is None
    assert set(stage.grammar.intents) == intents and stage.reloads == 0

    grammar.write_text(old_text.replace("[intents.window]", "[intents.shut]"))
    assert stage.reload_if_changed() is None and stage.reloads == 0  # still settling
    time.sleep(SETTLE_NS / 1e9 + 0.05)
    assert stage.reload_if_changed() is None
    assert stage.reloads == 1 and "shut" in stage.grammar.intents


def test_settled_ignores_missing_files_and_future_times() -> None:
    now = 10_000_000_000
    assert _settled(((now - SETTLE_NS, 5),), now)
    assert not _settled(((now - SETTLE_NS + 1, 5),), now)
    assert _settled(((-1, -1),), now)  # a missing file: its load reports the error
    assert _settled(((now + 5_000_000_000, 5),), now)  # clock skew: waiting would never end
