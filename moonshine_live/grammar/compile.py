"""Grammar -> a structure that is fast to match: one small token automaton per sentence.

Each sentence (rules inlined) becomes a graph of states whose edges consume tokens: a literal
word, a list entry, an integer, or free text; epsilon edges skip optional parts and join
alternatives. States are numbered so every edge goes forward, which lets the fuzzy aligner fill
its table state by state in one pass. Indexes built here let the matcher skip sentences that
cannot match (required words, length bounds) and pick fuzzy candidates by shared words.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from moonshine_live.grammar.fuzzy import TrigramIndex, similarity
from moonshine_live.grammar.schema import (
    Grammar,
    Intent,
    ListSlot,
    RangeSlot,
    Sentence,
    SlotList,
    SlotType,
    SlotValue,
)
from moonshine_live.grammar.syntax import (
    Alternative,
    Node,
    Optional,
    RuleRef,
    Sequence,
    SlotRef,
    Word,
)

_LOGGER = logging.getLogger(__name__)

# Edge kinds.
EPS = 0
"""Consumes nothing."""
WORD = 1
"""Consumes one token equal to `arg`."""
LIST = 2
"""Consumes the tokens of one entry of the CompiledList `arg`."""
NUMBER = 3
"""Consumes one integer token within `arg` = (low, high)."""
TEXT = 4
"""Consumes one token or more of free text."""

SMALL_LIST = 64
"""Lists with at most this many entries are searched directly for near spellings."""
UNBOUNDED = 1 << 30
"""Maximum length of a sentence with free text in it."""


class Edge(NamedTuple):
    kind: int
    target: int
    arg: Any
    slot: str | None
    key: object = None
    """Equal for edges that consume alike (kind and word, list name or range): a cache key."""


@dataclass(frozen=True, eq=False)
class CompiledList:
    """A slot list indexed for exact lookups (by first token) and near ones (by trigrams)."""

    name: str
    by_first: Mapping[str, tuple[tuple[tuple[str, ...], SlotValue], ...]]
    by_tokens: Mapping[tuple[str, ...], SlotValue]
    by_joined: Mapping[str, tuple[tuple[str, ...], SlotValue]]
    """Entries by their tokens written together: "fire fox" finds "firefox"."""
    joined: TrigramIndex
    entries: tuple[tuple[tuple[str, ...], SlotValue], ...]
    min_len: int
    max_len: int
    min_chars: int
    max_chars: int
    """Shortest and longest entry written without spaces (bounds for near lookups)."""
    by_initial: Mapping[str, tuple[str, ...]]
    """Entries written together, by first letter: small lists are searched through these."""

    def nearest(
        self, joined: str, min_similarity: float
    ) -> tuple[tuple[tuple[str, ...], SlotValue], float] | None:
        """The entry most similar to `joined` (words written together) and its similarity.

        Speech recognisers rarely get the first sound wrong, so small lists are only searched
        among entries with the same first letter; big ones through the trigram index.
        """
        if len(self.by_joined) > SMALL_LIST:
            near = self.joined.nearest(joined, min_similarity, 1)
            if not near:
                return None
            index, score = near[0]
            return self.by_joined[self.joined.strings[index]], score
        best, best_score = None, min_similarity
        for candidate in self.by_initial.get(joined[:1], ()):
            score = similarity(joined, candidate)
            if score >= best_score:
                best, best_score = candidate, score
        return None if best is None else (self.by_joined[best], best_score)


@dataclass(frozen=True, eq=False)
class Automaton:
    """Token automaton of one template, without epsilon edges: state 0 starts, any state in
    `accepting` may end a match."""

    edges: tuple[tuple[Edge, ...], ...]
    accepting: frozenset[int]
    groups: tuple[frozenset[str], ...]
    """Every match contains a word of each group: a quick reason to skip the sentence."""
    slots_needed: frozenset[tuple[int, str | None]]
    """(LIST, list name) and (NUMBER, None) for slots on every path through the sentence."""
    vocab: frozenset[str]
    lists: frozenset[str]
    min_len: int
    max_len: int
    max_literal: int
    """Most tokens a path matches outside free text: bounds the length used in scores."""


@dataclass(frozen=True, eq=False)
class CompiledSentence:
    intent: Intent
    sentence: Sentence
    order: int
    """Position among all sentences: earlier wins ties."""
    automaton: Automaton


@dataclass(frozen=True, eq=False)
class CompiledGrammar:
    grammar: Grammar
    sentences: tuple[CompiledSentence, ...]
    lists: Mapping[str, CompiledList]
    wake: Automaton | None
    word_index: Mapping[str, tuple[int, ...]]
    """Literal word -> sentences that contain it."""
    list_word_index: Mapping[str, tuple[int, ...]]
    """Token of a list entry -> sentences whose lists contain it."""
    vocab: TrigramIndex
    """Every literal word, for finding sentences from misheard words."""


def compile_grammar(grammar: Grammar) -> CompiledGrammar:
    """Build automata and indexes; linear in the size of the grammar."""
    lists = {name: compile_list(slot_list) for name, slot_list in grammar.lists.items()}
    sentences = []
    for intent in grammar.intents.values():
        for sentence in intent.sentences:
            automaton = build_automaton(sentence.expr, intent.slots, grammar, lists)
            sentences.append(CompiledSentence(intent, sentence, len(sentences), automaton))
    wake = build_automaton(grammar.wake.expr, {}, grammar, lists) if grammar.wake else None
    word_index: defaultdict[str, list[int]] = defaultdict(list)
    list_word_index: defaultdict[str, set[int]] = defaultdict(set)
    for compiled in sentences:
        for word in compiled.automaton.vocab:
            word_index[word].append(compiled.order)
        for name in compiled.automaton.lists:
            for tokens, _ in lists[name].entries:
                for token in tokens:
                    list_word_index[token].add(compiled.order)
    return CompiledGrammar(
        grammar=grammar,
        sentences=tuple(sentences),
        lists=lists,
        wake=wake,
        word_index={word: tuple(ids) for word, ids in word_index.items()},
        list_word_index={word: tuple(sorted(ids)) for word, ids in list_word_index.items()},
        vocab=TrigramIndex(word_index),
    )


def compile_list(slot_list: SlotList) -> CompiledList:
    entries = tuple((entry.tokens, entry.value) for entry in slot_list.entries)
    by_first: defaultdict[str, list[tuple[tuple[str, ...], SlotValue]]] = defaultdict(list)
    by_joined: dict[str, tuple[tuple[str, ...], SlotValue]] = {}
    for tokens, value in entries:
        by_first[tokens[0]].append((tokens, value))
        by_joined.setdefault("".join(tokens), (tokens, value))
    lengths = [len(tokens) for tokens, _ in entries]
    return CompiledList(
        name=slot_list.name,
        by_first={first: tuple(found) for first, found in by_first.items()},
        by_tokens=dict(entries),
        by_joined=by_joined,
        joined=TrigramIndex(by_joined),
        entries=entries,
        min_len=min(lengths),
        max_len=max(lengths),
        min_chars=min(len(joined) for joined in by_joined),
        max_chars=max(len(joined) for joined in by_joined),
        by_initial=_by_initial(by_joined),
    )


def _by_initial(strings: Iterable[str]) -> dict[str, tuple[str, ...]]:
    grouped: defaultdict[str, list[str]] = defaultdict(list)
    for text in strings:
        grouped[text[:1]].append(text)
    return {initial: tuple(found) for initial, found in grouped.items()}


def build_automaton(
    expr: Node,
    slots: Mapping[str, SlotType],
    grammar: Grammar,
    lists: Mapping[str, CompiledList],
) -> Automaton:
    builder = _Builder(slots, grammar, lists)
    final = builder.build(expr, builder.new_state(), ())
    edges, accepting = _without_epsilons(builder.edges, final)
    facts = _Facts(slots, grammar, lists)
    low, high = facts.length(expr, ())
    facts.text_length = 0
    literal = facts.length(expr, ())[1]
    return Automaton(
        edges=edges,
        accepting=accepting,
        groups=tuple(dict.fromkeys(facts.groups(expr, ()))),
        slots_needed=facts.slots_needed(expr, ()),
        vocab=frozenset(builder.vocab),
        lists=frozenset(builder.lists_used),
        min_len=low,
        max_len=high,
        max_literal=literal,
    )


def _without_epsilons(
    edges: list[list[Edge]], final: int
) -> tuple[tuple[tuple[Edge, ...], ...], frozenset[int]]:
    """Give each state the consuming edges of every state it reaches through epsilons.

    Join states then have no incoming edges and cost the matchers nothing. Edge order is kept
    (the edges of a state before those reached through its epsilons), so exact matching still
    prefers saying an optional part over skipping it.
    """
    closures: list[list[int]] = []
    for state in range(len(edges)):
        closure, pending = [state], [state]
        while pending:
            for edge in edges[pending.pop(0)]:
                if edge.kind == EPS and edge.target not in closure:
                    closure.append(edge.target)
                    pending.append(edge.target)
        closures.append(closure)
    consuming = tuple(
        tuple(dict.fromkeys(e for reached in closure for e in edges[reached] if e.kind != EPS))
        for closure in closures
    )
    accepting = frozenset(state for state, closure in enumerate(closures) if final in closure)
    return consuming, accepting


class _Builder:
    """Thompson-style construction; every new state is numbered after all existing ones."""

    def __init__(
        self, slots: Mapping[str, SlotType], grammar: Grammar, lists: Mapping[str, CompiledList]
    ) -> None:
        self.slots = slots
        self.grammar = grammar
        self.compiled_lists = lists
        self.edges: list[list[Edge]] = []
        self.vocab: set[str] = set()
        self.lists_used: set[str] = set()

    def new_state(self) -> int:
        self.edges.append([])
        return len(self.edges) - 1

    def add(self, source: int, kind: int, arg: Any = None, slot: str | None = None) -> int:
        target = self.new_state()
        key = (kind, arg.name if kind == LIST else arg)
        self.edges[source].append(Edge(kind, target, arg, slot, key))
        return target

    def build(self, node: Node, start: int, rules_in_use: tuple[str, ...]) -> int:
        """Add edges for `node` from state `start`; return the state where it ends."""
        if isinstance(node, Word):
            self.vocab.add(node.text)
            return self.add(start, WORD, node.text)
        if isinstance(node, Sequence):
            for item in node.items:
                start = self.build(item, start, rules_in_use)
            return start
        if isinstance(node, Alternative):
            ends = [self.build(option, start, rules_in_use) for option in node.options]
            join = self.new_state()
            for end in ends:
                self.edges[end].append(Edge(EPS, join, None, None, (EPS, None)))
            return join
        if isinstance(node, Optional):
            end = self.build(node.item, start, rules_in_use)
            join = self.new_state()
            self.edges[end].append(Edge(EPS, join, None, None, (EPS, None)))
            self.edges[start].append(
                Edge(EPS, join, None, None, (EPS, None))
            )  # after: prefer saying it
            return join
        if isinstance(node, RuleRef):
            assert node.name not in rules_in_use, f"rule cycle through <{node.name}>"
            rule = self.grammar.rules[node.name]
            return self.build(rule.expr, start, (*rules_in_use, node.name))
        return self.slot(node, start)

    def slot(self, node: SlotRef, start: int) -> int:
        slot_type = self.slots[node.name]
        if isinstance(slot_type, ListSlot):
            self.lists_used.add(slot_type.list_name)
            return self.add(start, LIST, self.compiled_lists[slot_type.list_name], node.name)
        if isinstance(slot_type, RangeSlot):
            return self.add(start, NUMBER, (slot_type.low, slot_type.high), node.name)
        return self.add(start, TEXT, None, node.name)


class _Facts:
    """Static facts about a template: words it always contains, token count bounds."""

    def __init__(
        self, slots: Mapping[str, SlotType], grammar: Grammar, lists: Mapping[str, CompiledList]
    ) -> None:
        self.slots = slots
        self.grammar = grammar
        self.lists = lists
        self.text_length = UNBOUNDED
        """Most tokens free text may take; 0 gives the bound outside free text."""

    def groups(self, node: Node, rules: tuple[str, ...]) -> list[frozenset[str]]:
        """Word groups such that every match contains at least one word of each group.

        "(open|launch) [the] {app} window" gives {open, launch} and {window}.
        """
        if isinstance(node, Word):
            return [frozenset((node.text,))]
        if isinstance(node, Sequence):
            return [group for item in node.items for group in self.groups(item, rules)]
        if isinstance(node, Alternative):
            options = [self.groups(option, rules) for option in node.options]
            if not all(options):
                return []  # some option needs no word at all
            return [frozenset().union(*(g for option in options for g in option))]
        if isinstance(node, RuleRef):
            return self.groups(self.grammar.rules[node.name].expr, (*rules, node.name))
        return []

    def slots_needed(self, node: Node, rules: tuple[str, ...]) -> frozenset[tuple[int, str | None]]:
        """List and number slots that every path through `node` fills."""
        if isinstance(node, Sequence):
            return frozenset().union(*(self.slots_needed(item, rules) for item in node.items))
        if isinstance(node, Alternative):
            options = [self.slots_needed(option, rules) for option in node.options]
            return frozenset.intersection(*options)
        if isinstance(node, RuleRef):
            return self.slots_needed(self.grammar.rules[node.name].expr, (*rules, node.name))
        if isinstance(node, SlotRef):
            slot_type = self.slots[node.name]
            if isinstance(slot_type, ListSlot):
                return frozenset({(LIST, slot_type.list_name)})
            if isinstance(slot_type, RangeSlot):
                return frozenset({(NUMBER, None)})
        return frozenset()

    def length(self, node: Node, rules: tuple[str, ...]) -> tuple[int, int]:
        """(fewest, most) tokens the node can match."""
        if isinstance(node, Word):
            return 1, 1
        if isinstance(node, Sequence):
            bounds = [self.length(item, rules) for item in node.items]
            return sum(b[0] for b in bounds), min(UNBOUNDED, sum(b[1] for b in bounds))
        if isinstance(node, Alternative):
            bounds = [self.length(option, rules) for option in node.options]
            return min(b[0] for b in bounds), max(b[1] for b in bounds)
        if isinstance(node, Optional):
            return 0, self.length(node.item, rules)[1]
        if isinstance(node, RuleRef):
            return self.length(self.grammar.rules[node.name].expr, (*rules, node.name))
        slot_type = self.slots[node.name]
        if isinstance(slot_type, ListSlot):
            compiled = self.lists[slot_type.list_name]
            return compiled.min_len, compiled.max_len
        if isinstance(slot_type, RangeSlot):
            return 1, 1
        return min(1, self.text_length), self.text_length
