"""Second loading pass: checks that need every file at once, then the frozen `Grammar`.

References to lists and rules, rule cycles, a slot filled twice in one sentence, and action
placeholders that name no slot are all found here, each reported at the file:line:column of the
reference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from moonshine_live.errors import GrammarError
from moonshine_live.grammar.schema import (
    DEFAULT_MODE,
    Action,
    Grammar,
    Intent,
    ListSlot,
    RangeSlot,
    Rule,
    RunAction,
    Sentence,
    SlotList,
    SlotType,
    SlotValue,
    SpawnAction,
    TextSlot,
    Wake,
    action_strings,
    placeholders,
)
from moonshine_live.grammar.syntax import (
    Alternative,
    Node,
    Optional,
    Position,
    RuleRef,
    Sequence,
    SlotRef,
    min_words,
    rule_refs,
    slot_refs,
)

_LOGGER = logging.getLogger(__name__)


@dataclass
class RuleDraft:
    name: str
    parts: list[tuple[str, Sequence, Position]]


@dataclass
class IntentDraft:
    name: str
    where: Position
    sentences: list[Sentence] = field(default_factory=list)
    slot_specs: dict[str, tuple[SlotType, Position]] = field(default_factory=dict)
    defaults: dict[str, SlotValue] = field(default_factory=dict)
    contexts: frozenset[str] = frozenset()
    modes: frozenset[str] = frozenset({DEFAULT_MODE})
    set_mode: str | None = None
    description: str = ""
    actions: list[tuple[Action, tuple[Position, ...]]] = field(default_factory=list)
    """Each action with the position of each of its `action_strings`."""


@dataclass
class Drafts:
    """What the files define, before cross-file checks."""

    files: list[str] = field(default_factory=list)
    lists: dict[str, SlotList] = field(default_factory=dict)
    rules: dict[str, RuleDraft] = field(default_factory=dict)
    intents: dict[str, IntentDraft] = field(default_factory=dict)
    wake: Wake | None = None


class Resolver:
    """Cross-file checks on the drafts, then the frozen Grammar."""

    def __init__(self, drafts: Drafts, report: Any) -> None:
        self.drafts = drafts
        self.report = report
        self.rules: dict[str, Rule] = {}
        self._rule_min: dict[str, int] | None = None

    def resolve(self) -> Grammar:
        for draft in self.drafts.rules.values():
            self._guard(self._check_rule, draft)
        intents: dict[str, Intent] = {}
        for draft in self.drafts.intents.values():
            try:
                intents[draft.name] = self._intent(draft)
            except GrammarError as exc:
                self.report(exc)
        return Grammar(
            intents=MappingProxyType(intents),
            lists=MappingProxyType(dict(self.drafts.lists)),
            rules=MappingProxyType(self.rules),
            wake=self.drafts.wake,
            files=tuple(self.drafts.files),
        )

    def _guard(self, check: Any, *args: Any) -> None:
        try:
            check(*args)
        except GrammarError as exc:
            self.report(exc)

    def _check_rule(self, draft: RuleDraft) -> None:
        for _, expr, where in draft.parts:
            for ref in rule_refs(expr):
                if ref.name not in self.drafts.rules:
                    raise _unknown_ref("rule", f"<{ref.name}>", self.drafts.rules, where, ref)
        cycle = self._cycle(draft.name, [draft.name])
        if cycle:
            chain = " -> ".join(f"<{name}>" for name in cycle)
            raise draft.parts[0][2].error(f"rule <{draft.name}> refers to itself: {chain}")
        options = [expr for _, expr, _ in draft.parts]
        body: Node = options[0] if len(options) == 1 else Sequence((Alternative(tuple(options)),))
        templates = tuple(t for t, _, _ in draft.parts)
        self.rules[draft.name] = Rule(draft.name, templates, body, draft.parts[0][2])

    def _cycle(self, name: str, chain: list[str]) -> list[str] | None:
        for _, expr, _ in self.drafts.rules[name].parts:
            for ref in rule_refs(expr):
                if ref.name == chain[0]:
                    return [*chain, ref.name]
                if ref.name in self.drafts.rules and ref.name not in chain:
                    found = self._cycle(ref.name, [*chain, ref.name])
                    if found:
                        return found
        return None

    def _rule_min_words(self) -> dict[str, int]:
        """Fewest words each rule can match (rules in cycles count as 1; they are errors)."""
        if self._rule_min is None:
            self._rule_min = {}
            for name in self.drafts.rules:
                self._rule_min[name] = self._min_of_rule(name, ())
        return self._rule_min

    def _min_of_rule(self, name: str, seen: tuple[str, ...]) -> int:
        if name in seen or name not in self.drafts.rules:
            return 1
        inner = {
            ref.name: self._min_of_rule(ref.name, (*seen, name))
            for _, expr, _ in self.drafts.rules[name].parts
            for ref in rule_refs(expr)
        }
        return min(min_words(expr, inner) for _, expr, _ in self.drafts.rules[name].parts)

    def _intent(self, draft: IntentDraft) -> Intent:
        slots: dict[str, SlotType] = {}
        for sentence in draft.sentences:
            if min_words(sentence.expr, self._rule_min_words()) == 0:
                raise sentence.where.error("sentence can match silence: all of it is optional")
            for ref, where in self._slot_refs(sentence.expr, sentence.where, ()):
                slots.setdefault(ref.name, self._slot_type(draft, ref, where))
            for name in slots:
                if _max_uses(sentence.expr, name, self.drafts.rules, ()) > 1:
                    raise sentence.where.error(f"slot {{{name}}} is used twice in one sentence")
        for name, (slot_type, where) in draft.slot_specs.items():
            if isinstance(slot_type, ListSlot) and slot_type.list_name not in self.drafts.lists:
                raise _unknown_ref("list", slot_type.list_name, self.drafts.lists, where)
            if name in slots:
                slots[name] = slot_type
        for name, value in draft.defaults.items():
            slot_type = slots.get(name)
            if isinstance(slot_type, RangeSlot) and not (
                isinstance(value, int)
                and not isinstance(value, bool)
                and slot_type.low <= value <= slot_type.high
            ):
                raise draft.where.error(
                    f"intent {draft.name!r}: default {name} = {value!r} is not an integer "
                    f"within {slot_type.low}..{slot_type.high}"
                )
        for action, wheres in draft.actions:
            self._check_placeholders(draft, action, wheres, slots)
        return Intent(
            name=draft.name,
            sentences=tuple(draft.sentences),
            slots=MappingProxyType(slots),
            defaults=MappingProxyType(draft.defaults),
            contexts=draft.contexts,
            modes=draft.modes,
            actions=tuple(action for action, _ in draft.actions),
            set_mode=draft.set_mode,
            description=draft.description,
            where=draft.where,
        )

    def _slot_refs(
        self, expr: Node, where: Position, seen: tuple[str, ...]
    ) -> Iterator[tuple[SlotRef, Position]]:
        """Slot references with their positions, looking inside rules (each rule once)."""
        for ref in slot_refs(expr):
            yield ref, where
        for ref in rule_refs(expr):
            if ref.name not in self.drafts.rules:
                raise _unknown_ref("rule", f"<{ref.name}>", self.drafts.rules, where, ref)
            if ref.name not in seen:
                for _, body, at in self.drafts.rules[ref.name].parts:
                    yield from self._slot_refs(body, at, (*seen, ref.name))

    def _slot_type(self, draft: IntentDraft, ref: SlotRef, where: Position) -> SlotType:
        if ref.name in draft.slot_specs:
            return draft.slot_specs[ref.name][0]
        if ref.name in self.drafts.lists:
            return ListSlot(ref.name)
        known = ", ".join(sorted(self.drafts.lists)) or "none"
        raise where.error(
            f"unknown slot {{{ref.name}}} in intent {draft.name!r}: no [lists.{ref.name}] and "
            f'no slots = {{ {ref.name} = "..." }} (a list name, "A..B" or "*"); lists: {known}',
            ref.column - 1,
        )

    def _check_placeholders(
        self,
        draft: IntentDraft,
        action: Action,
        wheres: tuple[Position, ...],
        slots: Mapping[str, SlotType],
    ) -> None:
        for index, (text, where) in enumerate(zip(action_strings(action), wheres, strict=True)):
            for name in placeholders(text):
                offset = max(text.find("{" + name), 0)
                if name not in slots and name not in draft.defaults:
                    known = ", ".join(sorted({*slots, *draft.defaults})) or "none"
                    raise where.error(
                        f"intent {draft.name!r}: action uses {{{name}}} but no sentence has that "
                        f"slot and defaults does not set it; slots: {known}",
                        offset,
                    )
                program = index == 0 and isinstance(action, RunAction | SpawnAction)
                if program and isinstance(slots.get(name), TextSlot):
                    raise where.error(
                        f"intent {draft.name!r}: free text {{{name}}} may not choose the program "
                        "(first argv element); use a list slot or a fixed program",
                        offset,
                    )


def _max_uses(expr: Node, name: str, rules: Mapping[str, RuleDraft], seen: tuple[str, ...]) -> int:
    """Most times slot `name` can be filled along one path through `expr`."""
    if isinstance(expr, SlotRef):
        return int(expr.name == name)
    if isinstance(expr, Sequence):
        return sum(_max_uses(item, name, rules, seen) for item in expr.items)
    if isinstance(expr, Alternative):
        return max(_max_uses(option, name, rules, seen) for option in expr.options)
    if isinstance(expr, RuleRef):
        if expr.name in seen or expr.name not in rules:
            return 0
        parts = rules[expr.name].parts
        return max(_max_uses(body, name, rules, (*seen, expr.name)) for _, body, _ in parts)
    if isinstance(expr, Optional):
        return _max_uses(expr.item, name, rules, seen)
    return 0


def _unknown_ref(
    kind: str, name: str, known: Mapping[str, Any], where: Position, ref: Any = None
) -> GrammarError:
    choices = ", ".join(sorted(known)) or "none"
    offset = ref.column - 1 if ref is not None else 0
    return where.error(f"unknown {kind} {name}; {kind}s defined: {choices}", offset)
