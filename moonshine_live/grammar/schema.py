"""What a loaded grammar is made of: frozen records for intents, lists, rules, slots and actions.

These records are the contract between the loader and everything downstream (matcher, checker,
actions, the engine). Mappings are read-only views.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from moonshine_live.grammar.syntax import Node, Position, Sequence

_LOGGER = logging.getLogger(__name__)

DEFAULT_MODE = "command"
"""The mode the engine starts in, and the mode of every intent that does not name one."""
ANY_MODE = "*"
"""``mode = "*"``: the intent is active in every mode (e.g. "what mode am I in")."""

SlotValue = str | int | float | bool
"""A typed slot value: ints from ranges, list values as written in TOML, text as said."""


@dataclass(frozen=True)
class ListSlot:
    """The slot takes the value of an entry of ``[lists.<list_name>]``."""

    list_name: str


@dataclass(frozen=True)
class RangeSlot:
    """The slot is an integer from `low` to `high` inclusive, said as words or digits."""

    low: int
    high: int


@dataclass(frozen=True)
class TextSlot:
    """The slot is free text: one word or more, handed back as said."""


SlotType = ListSlot | RangeSlot | TextSlot


@dataclass(frozen=True)
class ListEntry:
    """One spoken form of a list and the value it stands for."""

    spoken: str
    """As written in the file ("google chrome")."""
    tokens: tuple[str, ...]
    """Normalised ("google", "chrome")."""
    value: SlotValue


@dataclass(frozen=True)
class SlotList:
    """``[lists.<name>]``: spoken forms and their values."""

    name: str
    entries: tuple[ListEntry, ...]
    where: Position


@dataclass(frozen=True)
class Rule:
    """``[rules] <name> = "template"``: a reusable piece of template, used as ``<name>``."""

    name: str
    templates: tuple[str, ...]
    expr: Node
    where: Position


@dataclass(frozen=True)
class Sentence:
    """One template of an intent's ``say`` list."""

    template: str
    expr: Sequence
    where: Position
    """Position of the template's first character in its file."""


@dataclass(frozen=True)
class RunAction:
    """Run `argv` (no shell) and wait for it, killed after the action timeout."""

    argv: tuple[str, ...]


@dataclass(frozen=True)
class SpawnAction:
    """Start `argv` (no shell) in its own session and do not wait: for launching apps."""

    argv: tuple[str, ...]


@dataclass(frozen=True)
class KeysAction:
    """Press key combinations through xdotool, e.g. ("ctrl+t",) or ("ctrl+l", "Return")."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class TypeAction:
    """Type `text` through xdotool (after filling placeholders)."""

    text: str


@dataclass(frozen=True)
class CallAction:
    """Call the Python callback registered under `name` with the match."""

    name: str


Action = RunAction | SpawnAction | KeysAction | TypeAction | CallAction


def action_strings(action: Action) -> tuple[str, ...]:
    """The strings of an action that may hold ``{slot}`` placeholders."""
    if isinstance(action, RunAction | SpawnAction):
        return action.argv
    if isinstance(action, KeysAction):
        return action.keys
    if isinstance(action, TypeAction):
        return (action.text,)
    return ()


@dataclass(frozen=True)
class Intent:
    """``[intents.<name>]``: what can be said, the slots it fills and what it does."""

    name: str
    sentences: tuple[Sentence, ...]
    slots: Mapping[str, SlotType]
    """Type of every slot its sentences use (a list of the slot's name unless declared)."""
    defaults: Mapping[str, SlotValue]
    """Values for slots a sentence leaves out, and constant slots no sentence has."""
    contexts: frozenset[str]
    """Active only while one of these contexts is set; empty means in every context."""
    modes: frozenset[str]
    """Active in these modes; ANY_MODE means all of them."""
    actions: tuple[Action, ...]
    set_mode: str | None
    """Mode the engine switches to after this intent (e.g. "sleep")."""
    description: str
    where: Position

    def is_active(self, contexts: frozenset[str], mode: str) -> bool:
        """True when this intent may match in the given engine state."""
        if ANY_MODE not in self.modes and mode not in self.modes:
            return False
        return not self.contexts or not self.contexts.isdisjoint(contexts)


@dataclass(frozen=True)
class Wake:
    """``[grammar] wake = "..."``: a phrase said before commands, optional unless required."""

    template: str
    expr: Sequence
    required: bool
    where: Position


@dataclass(frozen=True)
class Grammar:
    """Everything the loaded grammar files define, merged and validated."""

    intents: Mapping[str, Intent]
    """In file order, then document order; earlier wins ties between equal matches."""
    lists: Mapping[str, SlotList]
    rules: Mapping[str, Rule]
    wake: Wake | None
    files: tuple[str, ...]

    @property
    def contexts(self) -> frozenset[str]:
        """Every context some intent is limited to."""
        return frozenset(c for intent in self.intents.values() for c in intent.contexts)

    @property
    def modes(self) -> frozenset[str]:
        """Every mode named by an intent (``mode`` or ``set_mode``), with DEFAULT_MODE."""
        modes = {DEFAULT_MODE}
        for intent in self.intents.values():
            modes |= intent.modes - {ANY_MODE}
            if intent.set_mode:
                modes.add(intent.set_mode)
        return frozenset(modes)


_PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def placeholders(text: str) -> list[str]:
    """Slot names used as ``{name}`` in an action string (``{{``/``}}`` are literal braces).

    Raises ValueError for a lone brace or an empty ``{}``.
    """
    names = []
    for found in _PLACEHOLDER_RE.finditer(text):
        token = found.group()
        if token in ("{{", "}}"):
            continue
        if token in ("{", "}") or not found.group(1).strip():
            raise ValueError(
                f"lone {token!r} at character {found.start() + 1}: write {{{{ or }}}} for a "
                "literal brace"
            )
        names.append(found.group(1).strip())
    return names


def fill(text: str, values: Mapping[str, SlotValue]) -> str:
    """Replace ``{name}`` with str(values[name]); KeyError names a missing slot.

    The result is one string whatever the value holds (spaces, quotes, ``;``): it becomes one
    argv element, never shell text.
    """

    def replace(found: re.Match[str]) -> str:
        token = found.group()
        if token in ("{{", "}}"):
            return token[0]
        name = (found.group(1) or "").strip()
        return _as_text(values[name])

    return _PLACEHOLDER_RE.sub(replace, text)


def _as_text(value: SlotValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
