"""Grammar files -> one validated `Grammar`: TOML tables to records, then cross-file checks.

Two passes. `_FileReader` turns each file's TOML into lists, rule drafts and intent drafts, with
the position of everything it may need to complain about later. `Resolver` then checks what
needs every file at once (references to lists and rules, rule cycles, duplicate names, action
placeholders) and builds the frozen records. `load_grammar` stops at the first error;
`collect_errors` (used by ``grammar check``) keeps going and returns them all.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moonshine_live.errors import GrammarError
from moonshine_live.grammar.locate import SourceMap, decode_error, toml_error
from moonshine_live.grammar.normalize import tokenize
from moonshine_live.grammar.resolve import Drafts, IntentDraft, Resolver, RuleDraft
from moonshine_live.grammar.schema import (
    ANY_MODE,
    Action,
    CallAction,
    Grammar,
    KeysAction,
    ListEntry,
    ListSlot,
    RangeSlot,
    RunAction,
    Sentence,
    SlotList,
    SlotType,
    SpawnAction,
    TextSlot,
    TypeAction,
    Wake,
    action_strings,
    placeholders,
)
from moonshine_live.grammar.syntax import (
    NAME_RE,
    RANGE_SEP,
    WILDCARD,
    Position,
    parse_template,
    rule_refs,
    slot_refs,
)

_LOGGER = logging.getLogger(__name__)

TOP_TABLES = ("grammar", "lists", "rules", "intents")
GRAMMAR_KEYS = ("description", "wake", "wake_required")
ACTION_KEYS = ("run", "spawn", "keys", "type", "call")
INTENT_KEYS = ("say", "slots", "defaults", "context", "mode", "set_mode", "description")
INTENT_KEYS += (*ACTION_KEYS, "actions")
LABEL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
"""Intent names, contexts, modes and callback names: no spaces, nothing shell-like."""
_RANGE_RE = re.compile(r"\s*(-?\d+)\s*" + re.escape(RANGE_SEP) + r"\s*(-?\d+)\s*")

PathLike = str | os.PathLike[str]


def load_grammar(paths: PathLike | Iterable[PathLike]) -> Grammar:
    """Load and merge grammar files; raise GrammarError (file:line:column) at the first problem."""
    return load_sources(_read_files(_as_path_list(paths)))


def loads_grammar(text: str, file: str = "<string>") -> Grammar:
    """Load one grammar from TOML text; `file` names it in error messages."""
    return load_sources([(file, text)])


def load_sources(sources: Iterable[tuple[str, str | bytes]]) -> Grammar:
    """Load (file name, TOML text) pairs as one grammar."""
    grammar, _ = _load(sources, collect=False)
    assert grammar is not None
    return grammar


def collect_errors(paths: Iterable[PathLike]) -> tuple[Grammar | None, list[GrammarError]]:
    """Load like `load_grammar` but return every error found (the grammar when there are none)."""
    sources: list[tuple[str, str | bytes]] = []
    errors: list[GrammarError] = []
    for path in _as_path_list(paths):
        try:
            sources.extend(_read_files([path]))
        except GrammarError as exc:
            errors.append(exc)
    grammar, more = _load(sources, collect=True)
    errors.extend(more)
    return (grammar if not errors else None), errors


def _as_path_list(paths: PathLike | Iterable[PathLike]) -> list[PathLike]:
    if isinstance(paths, str | os.PathLike):
        return [paths]
    return list(paths)


def _read_files(paths: list[PathLike]) -> list[tuple[str, str | bytes]]:
    if not paths:
        raise GrammarError("no grammar files given")
    sources: list[tuple[str, str | bytes]] = []
    for path in paths:
        try:
            sources.append((str(path), Path(path).read_bytes()))
        except OSError as exc:
            raise GrammarError(f"cannot read grammar file: {exc.strerror}", str(path)) from exc
    return sources


def _load(
    sources: Iterable[tuple[str, str | bytes]], collect: bool
) -> tuple[Grammar | None, list[GrammarError]]:
    errors: list[GrammarError] = []

    def report(error: GrammarError) -> None:
        if not collect:
            raise error
        errors.append(error)

    drafts = Drafts()
    for file, data in sources:
        _FileReader(file, data, drafts, report).read()
    grammar = Resolver(drafts, report).resolve()
    return grammar, errors


class _FileReader:
    """One file's TOML -> drafts. Each table is read on its own so one error does not hide more."""

    def __init__(self, file: str, data: str | bytes, drafts: Drafts, report: Any) -> None:
        self.file = file
        self.data = data
        self.drafts = drafts
        self.report = report
        self.source = SourceMap(file, "")

    def read(self) -> None:
        try:
            document = self._parse_toml()
        except GrammarError as exc:
            self.report(exc)
            return
        self.drafts.files.append(self.file)
        readers = (self._grammar_table, self._lists, self._rules, self._intents)
        for key in document:
            if key not in TOP_TABLES:
                self.report(_unknown(f"table [{key}]", TOP_TABLES, self.source.key((), key)))
        for name, reader in zip(TOP_TABLES, readers, strict=True):
            if name in document:
                self._guard(reader, document[name])

    def _guard(self, reader: Any, *args: Any) -> None:
        try:
            reader(*args)
        except GrammarError as exc:
            self.report(exc)

    def _parse_toml(self) -> dict[str, Any]:
        text = self.data
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                where = decode_error(exc, text, self.file)
                raise where.error("file is not UTF-8 text") from exc
        self.source = SourceMap(self.file, text)
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message, where = toml_error(exc, self.source)
            raise where.error(f"TOML syntax: {message}") from exc
        except RecursionError as exc:
            raise self.source.position(0).error("TOML nested too deeply") from exc

    def _grammar_table(self, table: Any) -> None:
        path = ("grammar",)
        table = _table(table, "[grammar]", self.source.table(path))
        for key in table:
            if key not in GRAMMAR_KEYS:
                self.report(
                    _unknown(f"key {key!r} in [grammar]", GRAMMAR_KEYS, self.key(path, key))
                )
        _expect(table.get("description", ""), str, "description", self.key(path, "description"))
        required = table.get("wake_required", False)
        _expect(required, bool, "wake_required", self.key(path, "wake_required"))
        if "wake" not in table:
            if required:
                raise self.key(path, "wake_required").error("wake_required without a wake phrase")
            return
        template = _expect(table["wake"], str, "wake", self.key(path, "wake"))
        where = self.source.string(path, template, "wake")
        wake = Wake(template, parse_template(template, where), required, where)
        if slot_refs(wake.expr) or rule_refs(wake.expr):
            raise where.error("the wake phrase may not use {slots} or <rules>")
        known = self.drafts.wake
        if known is not None and (known.expr, known.required) != (wake.expr, wake.required):
            raise where.error(f"wake phrase differs from the one at {known.where}")
        self.drafts.wake = known or wake

    def _lists(self, lists: Any) -> None:
        lists = _table(lists, "[lists]", self.source.table(("lists",)))
        for name, entries in lists.items():
            where = self.source.table(("lists", name))
            if name in self.drafts.lists:
                self.report(
                    where.error(f"list {name!r} already defined at {self.drafts.lists[name].where}")
                )
            elif not NAME_RE.fullmatch(name):
                self.report(where.error(f"bad list name {name!r}: use letters, digits and _"))
            else:
                self._guard(self._list, name, entries, where)

    def _list(self, name: str, entries: Any, where: Position) -> None:
        if isinstance(entries, list):
            entries = {_expect(e, str, f"entry of list {name!r}", where): e for e in entries}
        entries = _table(entries, f"[lists.{name}]", where)
        seen: dict[tuple[str, ...], ListEntry] = {}
        for spoken, value in entries.items():
            if not _is_scalar(value):
                raise self.key(("lists", name), spoken).error(
                    f"list {name!r}: the value of {spoken!r} must be a string, number or boolean"
                )
            entry = ListEntry(spoken, tokenize(spoken).words, value)
            if not entry.tokens:
                raise self.key(("lists", name), spoken).error(
                    f"list {name!r}: {spoken!r} has nothing to say once punctuation is dropped"
                )
            other = seen.setdefault(entry.tokens, entry)
            if other.value != value:
                raise self.key(("lists", name), spoken).error(
                    f"list {name!r}: {spoken!r} sounds like {other.spoken!r} but means "
                    f"{value!r}, not {other.value!r}"
                )
        if not seen:
            raise where.error(f"list {name!r} is empty")
        self.drafts.lists[name] = SlotList(name, tuple(seen.values()), where)

    def _rules(self, rules: Any) -> None:
        rules = _table(rules, "[rules]", self.source.table(("rules",)))
        for name, body in rules.items():
            where = self.key(("rules",), name)
            if name in self.drafts.rules:
                first = self.drafts.rules[name].parts[0][2]
                self.report(where.error(f"rule {name!r} already defined at {first}"))
            elif not NAME_RE.fullmatch(name):
                self.report(where.error(f"bad rule name {name!r}: use letters, digits and _"))
            else:
                self._guard(self._rule, name, body, where)

    def _rule(self, name: str, body: Any, where: Position) -> None:
        templates = _strings(body, f"rule {name!r}", where)
        parts = []
        for template in templates:
            at = self.source.string(("rules",), template, name)
            parts.append((template, parse_template(template, at, allow_silence=True), at))
        self.drafts.rules[name] = RuleDraft(name, parts)

    def _intents(self, intents: Any) -> None:
        intents = _table(intents, "[intents]", self.source.table(("intents",)))
        for name, table in intents.items():
            where = self.source.table(("intents", name))
            if name in self.drafts.intents:
                first = self.drafts.intents[name].where
                self.report(where.error(f"intent {name!r} already defined at {first}"))
            elif not LABEL_RE.fullmatch(name):
                self.report(where.error(f"bad intent name {name!r}: use letters, digits, _ . -"))
            else:
                self._guard(self._intent, name, table, where)

    def _intent(self, name: str, table: Any, where: Position) -> None:
        table = _table(table, f"[intents.{name}]", where)
        path = ("intents", name)
        draft = IntentDraft(name, where)
        for key in table:
            if key not in INTENT_KEYS:
                raise _unknown(f"key {key!r} in intent {name!r}", INTENT_KEYS, self.key(path, key))
        if "say" not in table:
            raise where.error(f"intent {name!r} has no say = [...] sentences")
        for template in _strings(table["say"], f"intent {name!r}: say", self.key(path, "say")):
            at = self.source.string(path, template, "say")
            draft.sentences.append(Sentence(template, parse_template(template, at), at))
        self._intent_options(draft, table, path)
        for key, value in table.items():
            if key in ACTION_KEYS:
                draft.actions.append(self._action(key, value, path, self.key(path, key)))
            elif key == "actions":
                draft.actions.extend(self._action_list(value, path, self.key(path, key)))
        self.drafts.intents[name] = draft

    def _intent_options(self, draft: IntentDraft, table: dict[str, Any], path: tuple[str, ...]):
        name = draft.name
        for slot, spec in _table(table.get("slots", {}), "slots", self.key(path, "slots")).items():
            at = self.source.string(path, spec, "slots") if isinstance(spec, str) else draft.where
            draft.slot_specs[slot] = (_slot_type(slot, spec, at), at)
        defaults = _table(table.get("defaults", {}), "defaults", self.key(path, "defaults"))
        for slot, value in defaults.items():
            if not _is_scalar(value):
                raise self.key(path, "defaults").error(
                    f"intent {name!r}: default of {slot!r} must be a string, number or boolean"
                )
            draft.defaults[slot] = value
        if "context" in table:
            draft.contexts = self._labels(table["context"], "context", path)
        if "mode" in table:
            draft.modes = self._labels(table["mode"], "mode", path, allow_any=True)
        if "set_mode" in table:
            (draft.set_mode,) = self._labels([table["set_mode"]], "set_mode", path)
        description = table.get("description", "")
        draft.description = _expect(description, str, "description", self.key(path, "description"))

    def _labels(
        self, value: Any, key: str, path: tuple[str, ...], allow_any: bool = False
    ) -> frozenset[str]:
        where = self.key(path, key)
        labels = _strings(value, key, where)
        for label in labels:
            if not (LABEL_RE.fullmatch(label) or (allow_any and label == ANY_MODE)):
                raise where.error(f"bad {key} {label!r}: use letters, digits, _ . -")
        return frozenset(labels)

    def _action(
        self, key: str, value: Any, path: tuple[str, ...], where: Position
    ) -> tuple[Action, tuple[Position, ...]]:
        if key in ("run", "spawn"):
            if isinstance(value, str):
                raise where.error(
                    f'{key} must be an argv list like ["xdg-open", "{{app}}"], not a string: '
                    "commands never go through a shell"
                )
            argv = _strings(value, key, where)
            action: Action = RunAction(argv) if key == "run" else SpawnAction(argv)
        elif key == "keys":
            keys = value.split() if isinstance(value, str) else _strings(value, key, where)
            if not keys or any(not k.strip() or " " in k.strip() for k in keys):
                raise where.error('keys must name keys like "ctrl+t" or ["ctrl+l", "Return"]')
            action = KeysAction(tuple(k.strip() for k in keys))
        elif key == "type":
            action = TypeAction(_expect(value, str, key, where))
            if not action.text:
                raise where.error("type needs some text")
        else:
            name = _expect(value, str, key, where)
            if not LABEL_RE.fullmatch(name):
                raise where.error(f"bad callback name {name!r}: use letters, digits, _ . -")
            action = CallAction(name)
        wheres = tuple(self.source.string(path, text, key) for text in action_strings(action))
        for text, at in zip(action_strings(action), wheres, strict=True):
            try:
                placeholders(text)
            except ValueError as exc:
                raise at.error(f"{key}: {exc}") from exc
        return action, wheres

    def _action_list(
        self, value: Any, path: tuple[str, ...], where: Position
    ) -> list[tuple[Action, tuple[Position, ...]]]:
        if not isinstance(value, list):
            raise where.error('actions must be a list of tables like [{ keys = "ctrl+t" }]')
        actions = []
        for item in value:
            if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in ACTION_KEYS:
                raise where.error(
                    f"each of actions = [...] is a table with one key of {', '.join(ACTION_KEYS)}"
                )
            ((key, body),) = item.items()
            actions.append(self._action(key, body, path, self.key(path, "actions")))
        return actions

    def key(self, path: tuple[str, ...], key: str) -> Position:
        return self.source.key(path, key)


def _slot_type(slot: str, spec: Any, where: Position) -> SlotType:
    if not NAME_RE.fullmatch(slot):
        raise where.error(f"bad slot name {slot!r}: use letters, digits and _")
    if not isinstance(spec, str):
        raise where.error(f'slot {slot!r}: type must be a string: a list name, "A..B" or "*"')
    if spec.strip() == WILDCARD:
        return TextSlot()
    found = _RANGE_RE.fullmatch(spec)
    if found:
        low, high = int(found.group(1)), int(found.group(2))
        if low > high:
            raise where.error(f"slot {slot!r}: empty range {spec!r} (low end above high end)")
        return RangeSlot(low, high)
    if NAME_RE.fullmatch(spec):
        return ListSlot(spec)
    raise where.error(
        f'slot {slot!r}: bad type {spec!r}: use a list name, an integer range "A..B" '
        'such as "0..100", or "*" for free text'
    )


def _table(value: Any, what: str, where: Position) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(f"{what} must be a table, not {_type_name(value)}")
    return value


def _strings(value: Any, what: str, where: Position) -> tuple[str, ...]:
    """A string or a non-empty list of strings, as a tuple."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise where.error(f"{what} must be a string or a non-empty list of strings")


def _expect(value: Any, kind: type, what: str, where: Position) -> Any:
    if not isinstance(value, kind):
        raise where.error(f"{what} must be a {kind.__name__}, not {_type_name(value)}")
    return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _type_name(value: Any) -> str:
    names = {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def _unknown(what: str, allowed: Iterable[str], where: Position) -> GrammarError:
    return where.error(f"unknown {what}; allowed: {', '.join(allowed)}")
