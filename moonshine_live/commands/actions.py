"""Run an intent's actions: commands as argv lists (never a shell), keys and typing through
xdotool, and named Python callbacks.

Spoken text never reaches a shell. A ``{slot}`` in an argv element is replaced inside that
element only, so a slot value such as ``; rm -rf / $(echo pwned)`` arrives as one literal
argument. Failures (missing program, non-zero exit, timeout, raising callback) are logged and
returned as results; nothing here raises into the caller.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from moonshine_live.errors import ConfigError
from moonshine_live.events import CommandEvent
from moonshine_live.grammar.matcher import CommandMatch
from moonshine_live.grammar.schema import (
    Action,
    CallAction,
    Grammar,
    KeysAction,
    RunAction,
    SlotValue,
    SpawnAction,
    TypeAction,
    fill,
)

_LOGGER = logging.getLogger(__name__)

Matched = CommandMatch | CommandEvent
"""A recognised command: the matcher's record, or the engine's event that carries it on."""
Callback = Callable[[Matched], object]


@dataclass(frozen=True)
class ActionConfig:
    """How actions run. Change with `dataclasses.replace`."""

    timeout_s: float = 5.0
    """Seconds a `run` command (or an xdotool call) may take before it is killed."""
    xdotool: str = "xdotool"
    """Program for `keys` and `type` actions: a name on PATH or a path."""
    type_delay_ms: int = 12
    """Delay between typed characters (xdotool type --delay), milliseconds."""
    dry_run: bool = False
    """Log and return the argv of each action without running anything."""
    max_output_chars: int = 4000
    """Captured stdout + stderr kept in a result (characters)."""

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(f"ActionConfig.timeout_s = {self.timeout_s!r}: must be above 0")
        if self.type_delay_ms < 0:
            raise ConfigError(
                f"ActionConfig.type_delay_ms = {self.type_delay_ms!r}: must be 0 or more"
            )
        if not self.xdotool:
            raise ConfigError("ActionConfig.xdotool is empty: name the xdotool program")


@dataclass(frozen=True)
class ActionResult:
    """What happened when one action ran."""

    action: Action
    ok: bool
    argv: tuple[str, ...] = ()
    """The command run (empty for callbacks)."""
    returncode: int | None = None
    output: str = ""
    """stdout then stderr of a `run` command, truncated; the repr of a callback's result."""
    error: str = ""
    """Why it failed; empty when ok."""
    skipped: bool = False
    """True for callbacks left to the caller (no callbacks mapping given) and dry runs."""
    duration_ms: float = 0.0


def render_argv(
    action: Action, slots: Mapping[str, SlotValue], config: ActionConfig | None = None
) -> tuple[str, ...]:
    """The argv an action runs with `slots` filled in (KeyError names a missing slot).

    Each ``{slot}`` is replaced inside its own argv element: one element stays one argument.
    Callbacks have no argv (empty tuple).
    """
    config = config or ActionConfig()
    if isinstance(action, RunAction | SpawnAction):
        return tuple(fill(part, slots) for part in action.argv)
    if isinstance(action, KeysAction):
        keys = [fill(key, slots) for key in action.keys]
        return (config.xdotool, "key", "--clearmodifiers", "--", *keys)
    if isinstance(action, TypeAction):
        delay = str(config.type_delay_ms)
        text = fill(action.text, slots)
        return (config.xdotool, "type", "--clearmodifiers", "--delay", delay, "--", text)
    return ()


def run_actions(
    actions: Iterable[Action],
    match: Matched,
    config: ActionConfig | None = None,
    callbacks: Mapping[str, Callback] | None = None,
) -> tuple[ActionResult, ...]:
    """Run actions in order, stopping after the first that fails (a half-done key sequence
    should not go on). Never raises; failures are logged and returned.

    `callbacks`: the functions ``call = "name"`` actions call with the match. None leaves
    callbacks to the caller (their results are `skipped`).
    """
    results = []
    for action in actions:
        result = run_action(action, match, config, callbacks)
        results.append(result)
        if not result.ok:
            break
    return tuple(results)


def run_intent(
    grammar: Grammar,
    match: Matched,
    config: ActionConfig | None = None,
    callbacks: Mapping[str, Callback] | None = None,
) -> tuple[ActionResult, ...]:
    """Run the actions of the matched intent."""
    intent = grammar.intents.get(match.intent)
    if intent is None:
        _LOGGER.error("No intent %r in the grammar; nothing to run", match.intent)
        return ()
    return run_actions(intent.actions, match, config, callbacks)


def run_action(
    action: Action,
    match: Matched,
    config: ActionConfig | None = None,
    callbacks: Mapping[str, Callback] | None = None,
) -> ActionResult:
    """Run one action for a match. Never raises (except KeyboardInterrupt and the like)."""
    config = config or ActionConfig()
    started = time.perf_counter()
    try:
        result = _dispatch(action, match, config, callbacks)
    except Exception as exc:  # a bug or an odd OS error must not stop the engine
        _LOGGER.exception("Action %s of intent %r failed", action, match.intent)
        result = ActionResult(action, ok=False, error=f"{type(exc).__name__}: {exc}")
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return ActionResult(**{**result.__dict__, "duration_ms": elapsed_ms})


def _dispatch(
    action: Action,
    match: Matched,
    config: ActionConfig,
    callbacks: Mapping[str, Callback] | None,
) -> ActionResult:
    if isinstance(action, CallAction):
        return _call(action, match, callbacks)
    try:
        argv = render_argv(action, match.slots, config)
    except KeyError as exc:
        error = f"slot {{{exc.args[0]}}} has no value in this match (add a default)"
        _LOGGER.error("Intent %r: %s", match.intent, error)
        return ActionResult(action, ok=False, error=error)
    if config.dry_run:
        _LOGGER.info("Dry run, intent %r would run %s", match.intent, list(argv))
        return ActionResult(action, ok=True, argv=argv, skipped=True)
    if isinstance(action, KeysAction | TypeAction) and shutil.which(config.xdotool) is None:
        error = f"{config.xdotool} not found: install xdotool (X11) for keys and type actions"
        _LOGGER.error("Intent %r: %s", match.intent, error)
        return ActionResult(action, ok=False, argv=argv, error=error)
    if isinstance(action, SpawnAction):
        return _spawn(action, argv, match)
    return _run(action, argv, match, config)


def _run(action: Action, argv: tuple[str, ...], match: Matched, config: ActionConfig):
    """Run argv without a shell and wait (killed after the timeout)."""
    _LOGGER.debug("Intent %r runs %s", match.intent, list(argv))
    try:
        done = subprocess.run(
            argv,
            shell=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=config.timeout_s,
            check=False,
        )
    except FileNotFoundError:
        return _failed(action, argv, match, f"program not found: {argv[0]}")
    except subprocess.TimeoutExpired:
        return _failed(action, argv, match, f"killed after the {config.timeout_s} s timeout")
    except OSError as exc:
        return _failed(action, argv, match, f"cannot run {argv[0]}: {exc.strerror or exc}")
    output = (done.stdout + done.stderr)[: config.max_output_chars]
    if done.returncode != 0:
        error = f"exit status {done.returncode}: {done.stderr.strip()[:200]}"
        result = _failed(action, argv, match, error)
        return ActionResult(**{**result.__dict__, "returncode": done.returncode, "output": output})
    return ActionResult(action, ok=True, argv=argv, returncode=0, output=output)


def _spawn(action: Action, argv: tuple[str, ...], match: Matched) -> ActionResult:
    """Start argv without a shell in its own session and do not wait (apps outlive us)."""
    _LOGGER.debug("Intent %r starts %s", match.intent, list(argv))
    try:
        subprocess.Popen(
            argv,
            shell=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except FileNotFoundError:
        return _failed(action, argv, match, f"program not found: {argv[0]}")
    except OSError as exc:
        return _failed(action, argv, match, f"cannot start {argv[0]}: {exc.strerror or exc}")
    return ActionResult(action, ok=True, argv=argv)


def _call(
    action: CallAction, match: Matched, callbacks: Mapping[str, Callback] | None
) -> ActionResult:
    if callbacks is None:
        return ActionResult(action, ok=True, skipped=True)
    callback = callbacks.get(action.name)
    if callback is None:
        known = ", ".join(sorted(callbacks)) or "none"
        error = f"no callback named {action.name!r}; registered: {known}"
        _LOGGER.error("Intent %r: %s", match.intent, error)
        return ActionResult(action, ok=False, error=error)
    try:
        value = callback(match)
    except Exception as exc:
        _LOGGER.exception("Callback %r for intent %r raised", action.name, match.intent)
        return ActionResult(action, ok=False, error=f"{type(exc).__name__}: {exc}")
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        error = f"callback {action.name!r} is async: run it through the engine's dispatcher"
        _LOGGER.error("Intent %r: %s", match.intent, error)
        return ActionResult(action, ok=False, error=error)
    return ActionResult(action, ok=True, output=repr(value) if value is not None else "")


def _failed(action: Action, argv: tuple[str, ...], match: Matched, error: str):
    _LOGGER.warning("Intent %r: %s failed: %s", match.intent, list(argv), error)
    return ActionResult(action, ok=False, argv=argv, error=error)
