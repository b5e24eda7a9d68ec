"""``moonshine-live grammar check``: errors, warnings and examples for grammar files.

Errors are everything `load_grammar` refuses, all of them rather than the first. Warnings are
legal but suspicious: intents that overlap or shadow each other (found by matching each
intent's own example sentences against every sentence), rules and lists nothing uses, actions
that use a slot some sentence leaves empty, modes nothing can enter or leave.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from moonshine_live.errors import GrammarError
from moonshine_live.grammar.compile import CompiledGrammar, compile_grammar
from moonshine_live.grammar.load import PathLike, collect_errors
from moonshine_live.grammar.normalize import tokenize
from moonshine_live.grammar.recognize import exact_parses
from moonshine_live.grammar.sample import examples, iter_examples
from moonshine_live.grammar.schema import (
    ANY_MODE,
    DEFAULT_MODE,
    Grammar,
    Intent,
    ListSlot,
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
    rule_refs,
)

_LOGGER = logging.getLogger(__name__)

OVERLAP_SAMPLES = 200
"""Example sentences per intent (digits and words each) tried against the other intents."""


@dataclass(frozen=True)
class GrammarWarning:
    """Something legal but probably not what the author meant."""

    kind: str
    """"overlap", "shadowed", "unused-rule", "unused-list", "empty-slot", "duplicate", "mode"."""
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line, self.column) if p is not None)
        return f"{where}: warning: {self.message}" if where else f"warning: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    """The outcome of checking grammar files."""

    files: tuple[str, ...]
    grammar: Grammar | None
    errors: tuple[GrammarError, ...]
    warnings: tuple[GrammarWarning, ...]
    examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Example sentences per intent (empty when there are errors)."""

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self, show_examples: bool = True) -> str:
        """Human-readable report: errors, warnings, then examples per intent."""
        lines = [str(error) for error in self.errors]
        lines += [str(warning) for warning in self.warnings]
        if show_examples and self.grammar is not None:
            for name, sentences in self.examples.items():
                intent = self.grammar.intents[name]
                scope = _scope_text(intent)
                lines.append(f"{name}{scope}: " + " | ".join(f'"{s}"' for s in sentences))
        summary = f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        if self.grammar is not None:
            summary += f", {len(self.grammar.intents)} intent(s) in {len(self.files)} file(s)"
        lines.append(summary)
        return "\n".join(lines)


def check_grammar(
    paths: PathLike | Iterable[PathLike], examples_per_intent: int = 3
) -> CheckReport:
    """Check grammar files together (as the engine would load them)."""
    path_list = [paths] if isinstance(paths, str) or not isinstance(paths, Iterable) else paths
    files = tuple(str(p) for p in path_list)
    grammar, errors = collect_errors(path_list)
    if grammar is None:
        return CheckReport(files, None, tuple(errors), ())
    samples = {
        name: tuple(examples(grammar, name, examples_per_intent)) for name in grammar.intents
    }
    return CheckReport(files, grammar, (), tuple(find_warnings(grammar)), MappingProxyType(samples))


def find_warnings(grammar: Grammar) -> list[GrammarWarning]:
    """Every warning about a loaded grammar."""
    warnings = _unused(grammar)
    for intent in grammar.intents.values():
        warnings += _duplicates(intent) + _empty_slots(intent, grammar)
    warnings += _modes(grammar)
    warnings += _overlaps(grammar, compile_grammar(grammar))
    return warnings


def _unused(grammar: Grammar) -> list[GrammarWarning]:
    used_rules: set[str] = set()
    pending = [
        ref.name for i in grammar.intents.values() for s in i.sentences for ref in rule_refs(s.expr)
    ]
    while pending:
        name = pending.pop()
        if name not in used_rules and name in grammar.rules:
            used_rules.add(name)
            pending.extend(ref.name for ref in rule_refs(grammar.rules[name].expr))
    used_lists = {
        slot_type.list_name
        for intent in grammar.intents.values()
        for slot_type in intent.slots.values()
        if isinstance(slot_type, ListSlot)
    }
    warnings = [
        _warn("unused-rule", f"rule <{name}> is not used by any intent", rule.where)
        for name, rule in grammar.rules.items()
        if name not in used_rules
    ]
    warnings += [
        _warn("unused-list", f"list {name!r} is not used by any intent", slot_list.where)
        for name, slot_list in grammar.lists.items()
        if name not in used_lists
    ]
    return warnings


def _duplicates(intent: Intent) -> list[GrammarWarning]:
    seen: dict[Sequence, str] = {}
    warnings = []
    for sentence in intent.sentences:
        if sentence.expr in seen:
            message = f"intent {intent.name!r} says {seen[sentence.expr]!r} twice"
            warnings.append(_warn("duplicate", message, sentence.where))
        seen.setdefault(sentence.expr, sentence.template)
    return warnings


def _empty_slots(intent: Intent, grammar: Grammar) -> list[GrammarWarning]:
    """Actions that use a slot that a sentence may leave empty, with no default for it."""
    used = {name for action in intent.actions for text in action_strings(action)
            for name in placeholders(text)}  # fmt: skip
    warnings = []
    for sentence in intent.sentences:
        always = _always_filled(sentence.expr, grammar)
        for name in sorted(used - always - set(intent.defaults)):
            message = (
                f"intent {intent.name!r}: {sentence.template!r} can leave {{{name}}} empty, "
                f"but an action uses it; add defaults = {{ {name} = ... }}"
            )
            warnings.append(_warn("empty-slot", message, sentence.where))
    return warnings


def _always_filled(node: Node, grammar: Grammar) -> set[str]:
    if isinstance(node, SlotRef):
        return {node.name}
    if isinstance(node, Sequence):
        return set().union(*(_always_filled(item, grammar) for item in node.items))
    if isinstance(node, Alternative):
        return set.intersection(*(_always_filled(option, grammar) for option in node.options))
    if isinstance(node, RuleRef):
        return _always_filled(grammar.rules[node.name].expr, grammar)
    if isinstance(node, Optional):
        return set()
    return set()


def _modes(grammar: Grammar) -> list[GrammarWarning]:
    entered = {DEFAULT_MODE} | {i.set_mode for i in grammar.intents.values() if i.set_mode}
    warnings = []
    for intent in grammar.intents.values():
        if ANY_MODE not in intent.modes and intent.modes.isdisjoint(entered):
            modes = ", ".join(sorted(intent.modes))
            message = (
                f"intent {intent.name!r} is only active in mode {modes}, which no set_mode enters"
            )
            warnings.append(_warn("mode", message, intent.where))
        target = intent.set_mode
        if target and not any(i.is_active(i.contexts, target) for i in grammar.intents.values()):
            message = (
                f"intent {intent.name!r} switches to mode {target!r}, where no intent is active"
            )
            warnings.append(_warn("mode", message, intent.where))
    return warnings


def _overlaps(grammar: Grammar, compiled: CompiledGrammar) -> list[GrammarWarning]:
    """Match each intent's example sentences against all sentences of other intents."""
    reported: set[tuple[str, str]] = set()
    warnings = []
    for intent in grammar.intents.values():
        samples = itertools.chain(
            iter_examples(grammar, intent.name, "digits", OVERLAP_SAMPLES),
            iter_examples(grammar, intent.name, "words", OVERLAP_SAMPLES),
        )
        for sample in samples:
            words = tokenize(sample.text).words
            parses = [
                parse
                for parse in exact_parses(compiled, words, range(len(compiled.sentences)))
                if _scopes_overlap(parse.compiled.intent, intent)
            ]
            names = [parse.compiled.intent.name for parse in parses]
            for other in dict.fromkeys(names):
                pair = (intent.name, other)
                if other == intent.name or pair in reported or pair[::-1] in reported:
                    continue
                reported.add(pair)
                warnings.append(_overlap_warning(grammar, intent, other, sample.text, names[0]))
    return warnings


def _overlap_warning(
    grammar: Grammar, intent: Intent, other: str, text: str, winner: str
) -> GrammarWarning:
    where = grammar.intents[other].where
    if winner == intent.name:
        message = f"intents {intent.name!r} and {other!r} ({where}) both match {text!r}; "
        message += f"{intent.name!r} wins"
        return _warn("overlap", message, intent.where)
    message = f"intent {intent.name!r} is shadowed by {winner!r} ({grammar.intents[winner].where})"
    message += f" for {text!r}"
    return _warn("shadowed", message, intent.where)


def _scopes_overlap(a: Intent, b: Intent) -> bool:
    """True when some engine state (contexts, mode) makes both intents active."""
    modes_meet = ANY_MODE in a.modes or ANY_MODE in b.modes or not a.modes.isdisjoint(b.modes)
    contexts_meet = not a.contexts or not b.contexts or not a.contexts.isdisjoint(b.contexts)
    return modes_meet and contexts_meet


def _scope_text(intent: Intent) -> str:
    parts = []
    if intent.contexts:
        parts.append("context " + "|".join(sorted(intent.contexts)))
    if intent.modes != {DEFAULT_MODE}:
        parts.append("mode " + "|".join(sorted(intent.modes)))
    return f" [{', '.join(parts)}]" if parts else ""


def _warn(kind: str, message: str, where: Position) -> GrammarWarning:
    return GrammarWarning(kind, message, where.file, where.line, where.column)
