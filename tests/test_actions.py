"""Actions: argv without a shell, xdotool keys/typing, callbacks, and failures that never raise."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from moonshine_live.commands.actions import (
    ActionConfig,
    render_argv,
    run_action,
    run_actions,
    run_intent,
)
from moonshine_live.errors import ConfigError
from moonshine_live.grammar import (
    CallAction,
    KeysAction,
    RunAction,
    SpawnAction,
    TypeAction,
    loads_grammar,
)
from moonshine_live.grammar.matcher import CommandMatch, Matcher

EVIL = """; rm -rf / $(echo pwned) | && "quotes" 'single' `id` > /tmp/pwned *"""
PRINT_ARGV = "import sys, json; print(json.dumps(sys.argv[1:]))"


def command(slots: dict, intent: str = "test") -> CommandMatch:
    return CommandMatch(intent, slots, "text", "text", 1.0, True)


@pytest.fixture
def fake_xdotool(tmp_path: Path) -> tuple[str, Path]:
    """An executable that records its argv as JSON lines, standing in for xdotool."""
    log = tmp_path / "xdotool.log"
    script = tmp_path / "xdotool"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), log


def test_shell_metacharacters_arrive_as_one_literal_argument(tmp_path: Path) -> None:
    action = RunAction((sys.executable, "-c", PRINT_ARGV, "{text}", "before {text} after", "{n}"))
    result = run_action(action, command({"text": EVIL, "n": 5}))
    assert result.ok, result
    assert json.loads(result.output) == [EVIL, f"before {EVIL} after", "5"]
    assert not Path("/tmp/pwned").exists() or Path("/tmp/pwned").stat().st_mtime < time.time() - 60


def test_matched_free_text_reaches_the_command_verbatim() -> None:
    grammar = loads_grammar(
        f'[intents.echo]\nsay = "echo {{text}}"\nslots = {{ text = "*" }}\n'
        f'run = [{json.dumps(sys.executable)}, "-c", {json.dumps(PRINT_ARGV)}, "{{text}}"]\n'
    )
    match = Matcher(grammar).match(f"echo {EVIL}")
    assert isinstance(match, CommandMatch)
    (result,) = run_intent(grammar, match)
    assert result.ok, result
    said = json.loads(result.output)
    assert len(said) == 1 and "rm -rf / $(echo pwned) | &&" in said[0]


def test_render_argv() -> None:
    slots = {"app": "firefox", "level": 40, "on": True}
    assert render_argv(RunAction(("pactl", "x", "{level}%")), slots) == ("pactl", "x", "40%")
    assert render_argv(SpawnAction(("{app}",)), slots) == ("firefox",)
    assert render_argv(RunAction(("echo", "{on}", "{{literal}}")), slots) == (
        "echo",
        "true",
        "{literal}",
    )
    config = ActionConfig(xdotool="/x/xdotool", type_delay_ms=0)
    assert render_argv(KeysAction(("ctrl+{level}", "Return")), slots, config) == (
        "/x/xdotool", "key", "--clearmodifiers", "--", "ctrl+40", "Return",
    )  # fmt: skip
    assert render_argv(TypeAction("-{app}"), slots, config) == (
        "/x/xdotool", "type", "--clearmodifiers", "--delay", "0", "--", "-firefox",
    )  # fmt: skip
    assert render_argv(CallAction("cb"), slots) == ()
    with pytest.raises(KeyError):
        render_argv(RunAction(("echo", "{missing}")), slots)


def test_keys_and_type_go_through_xdotool(fake_xdotool: tuple[str, Path]) -> None:
    program, log = fake_xdotool
    config = ActionConfig(xdotool=program)
    results = run_actions(
        [KeysAction(("ctrl+l",)), TypeAction("{text}"), KeysAction(("Return",))],
        command({"text": EVIL}),
        config,
    )
    assert [r.ok for r in results] == [True, True, True]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [
        ["key", "--clearmodifiers", "--", "ctrl+l"],
        ["type", "--clearmodifiers", "--delay", "12", "--", EVIL],
        ["key", "--clearmodifiers", "--", "Return"],
    ]


def test_missing_xdotool_is_reported_not_raised() -> None:
    config = ActionConfig(xdotool="no-such-xdotool-here")
    result = run_action(KeysAction(("ctrl+t",)), command({}), config)
    assert not result.ok
    assert "no-such-xdotool-here not found" in result.error


def test_failures_are_results_not_exceptions() -> None:
    missing = run_action(RunAction(("no-such-program-xyz", "a")), command({}))
    assert not missing.ok and "program not found" in missing.error
    failing = run_action(RunAction((sys.executable, "-c", "raise SystemExit(3)")), command({}))
    assert not failing.ok and failing.returncode == 3
    slow = run_action(
        RunAction((sys.executable, "-c", "import time; time.sleep(5)")),
        command({}),
        ActionConfig(timeout_s=0.2),
    )
    assert not slow.ok and "timeout" in slow.error and slow.duration_ms < 3000
    empty = run_action(RunAction(("echo", "{level}")), command({}))
    assert not empty.ok and "{level} has no value" in empty.error


def test_sequence_stops_at_the_first_failure(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    results = run_actions(
        [
            RunAction(("no-such-program-xyz",)),
            RunAction((sys.executable, "-c", f"open({str(marker)!r}, 'w')")),
        ],
        command({}),
    )
    assert len(results) == 1 and not results[0].ok
    assert not marker.exists()


def test_callbacks() -> None:
    seen: list[CommandMatch] = []
    match = command({"x": 1}, intent="note")
    ok = run_action(CallAction("keep"), match, callbacks={"keep": seen.append})
    assert ok.ok and seen == [match]
    raising = run_action(CallAction("bad"), match, callbacks={"bad": lambda m: 1 / 0})
    assert not raising.ok and "ZeroDivisionError" in raising.error
    unknown = run_action(CallAction("nope"), match, callbacks={"keep": seen.append})
    assert not unknown.ok and "registered: keep" in unknown.error
    left_to_caller = run_action(CallAction("keep"), match)
    assert left_to_caller.ok and left_to_caller.skipped


def test_async_callback_is_refused_cleanly() -> None:
    async def later(match: CommandMatch) -> None:
        await asyncio.sleep(0)

    result = run_action(CallAction("later"), command({}), callbacks={"later": later})
    assert not result.ok and "async" in result.error


def test_dry_run_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    action = RunAction((sys.executable, "-c", f"open({str(marker)!r}, 'w')"))
    result = run_action(action, command({}), ActionConfig(dry_run=True))
    assert result.ok and result.skipped and result.argv[0] == sys.executable
    assert not marker.exists()


def test_spawn_does_not_wait(tmp_path: Path) -> None:
    marker = tmp_path / "spawned"
    code = f"import os, time; time.sleep(0.3); open({str(marker)!r}, 'w').write(str(os.getsid(0)))"
    started = time.perf_counter()
    result = run_action(SpawnAction((sys.executable, "-c", code)), command({}))
    assert result.ok and (time.perf_counter() - started) < 0.3
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    assert int(marker.read_text() or 0) != os.getsid(0)  # its own session


@pytest.mark.parametrize("changes", [{"timeout_s": 0}, {"type_delay_ms": -1}, {"xdotool": ""}])
def test_config_is_validated(changes: dict) -> None:
    with pytest.raises(ConfigError):
        ActionConfig(**changes)
