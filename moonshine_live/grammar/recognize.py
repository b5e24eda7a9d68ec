"""Match normalised tokens against compiled sentences exactly; pick fuzzy candidates.

Exact: a depth-first walk of the sentence automaton that remembers dead (state, position)
pairs, so it stays linear-ish however many optional parts a template has. Free text takes as
few words as it can, so literal words after it ("... [please]") are matched when said.
Fuzzy alignment itself lives in `align.py`; this module ranks which sentences to try.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from moonshine_live.grammar.compile import (
    EPS,
    LIST,
    NUMBER,
    TEXT,
    WORD,
    Automaton,
    CompiledGrammar,
    CompiledSentence,
    Edge,
)
from moonshine_live.grammar.normalize import is_int
from moonshine_live.grammar.schema import SlotValue

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotFill:
    """A slot filled by tokens[start:end]; `value` is None for free text (taken from the text)."""

    name: str
    kind: int
    value: SlotValue | None
    start: int
    end: int
    problem: str | None = None
    """Why the value cannot be used (a number out of range); the match is then rejected."""


@dataclass(frozen=True)
class Parse:
    """How one sentence matched the tokens."""

    compiled: CompiledSentence
    fills: tuple[SlotFill, ...]
    score: float
    """1.0 for exact parses; 1 - cost / length for fuzzy ones."""
    cost: float
    wildcard_tokens: int
    slot_tokens: int
    exact_words: int = 0
    """Template words heard exactly (fuzzy parses); free text needs at least one."""

    @property
    def problem(self) -> str | None:
        return next((fill.problem for fill in self.fills if fill.problem), None)

    @property
    def rank(self) -> tuple[float, int, int, int]:
        """Sort key, best first: score, then fewer free-text and slot words, then file order."""
        return (-self.score, self.wildcard_tokens, self.slot_tokens, self.compiled.order)


def exact_parses(
    compiled: CompiledGrammar, words: tuple[str, ...], sentence_ids: Iterable[int]
) -> list[Parse]:
    """Every sentence among `sentence_ids` that matches exactly, best first."""
    present = set(words)
    count = len(words)
    found = []
    for sentence_id in sentence_ids:
        sentence = compiled.sentences[sentence_id]
        automaton = sentence.automaton
        if automaton.min_len <= count <= automaton.max_len and all(
            not group.isdisjoint(present) for group in automaton.groups
        ):
            fills = walk_exact(automaton, words)
            if fills is not None:
                found.append(_exact_parse(sentence, fills))
    found.sort(key=lambda parse: parse.rank)
    return found


def _exact_parse(sentence: CompiledSentence, fills: tuple[SlotFill, ...]) -> Parse:
    wildcard = sum(f.end - f.start for f in fills if f.kind == TEXT)
    slot_tokens = sum(f.end - f.start for f in fills)
    return Parse(sentence, fills, 1.0, 0.0, wildcard, slot_tokens)


def walk_exact(automaton: Automaton, words: tuple[str, ...]) -> tuple[SlotFill, ...] | None:
    """Slot fills of the first exact path over all of `words`, or None."""
    walker = _ExactWalker(automaton, words)
    return tuple(walker.fills) if walker.walk(0, 0) else None


def longest_prefix(automaton: Automaton, words: tuple[str, ...]) -> int:
    """Most leading words that form a complete path (0 if none): finds a wake phrase."""
    ends = [0]
    pending, seen = [(0, 0)], {(0, 0)}
    while pending:
        state, i = pending.pop()
        if state in automaton.accepting:
            ends.append(i)
        for edge in automaton.edges[state]:
            step = None
            if edge.kind == EPS:
                step = (edge.target, i)
            elif edge.kind == WORD and i < len(words) and words[i] == edge.arg:
                step = (edge.target, i + 1)
            if step is not None and step not in seen:
                seen.add(step)
                pending.append(step)
    return max(ends)


class _ExactWalker:
    def __init__(self, automaton: Automaton, words: tuple[str, ...]) -> None:
        self.edges = automaton.edges
        self.accepting = automaton.accepting
        self.words = words
        self.dead: set[tuple[int, int]] = set()
        self.fills: list[SlotFill] = []

    def walk(self, state: int, i: int) -> bool:
        if i == len(self.words) and state in self.accepting:
            return True
        if (state, i) in self.dead:
            return False
        for edge in self.edges[state]:
            if edge.kind == EPS:
                if self.walk(edge.target, i):
                    return True
            elif i < len(self.words) and self._step(edge, i):
                return True
        self.dead.add((state, i))
        return False

    def _step(self, edge: Edge, i: int) -> bool:
        word = self.words[i]
        if edge.kind == WORD:
            return word == edge.arg and self.walk(edge.target, i + 1)
        for end, value in self._slot_ends(edge, i, word):
            assert edge.slot is not None
            self.fills.append(SlotFill(edge.slot, edge.kind, value, i, end))
            if self.walk(edge.target, end):
                return True
            self.fills.pop()
        return False

    def _slot_ends(self, edge: Edge, i: int, word: str) -> list[tuple[int, SlotValue | None]]:
        if edge.kind == LIST:
            return [
                (i + len(tokens), value)
                for tokens, value in edge.arg.by_first.get(word, ())
                if self.words[i : i + len(tokens)] == tokens
            ]
        if edge.kind == NUMBER:
            low, high = edge.arg
            if is_int(word) and low <= int(word) <= high:
                return [(i + 1, int(word))]
            return []
        return [(end, None) for end in range(i + 1, len(self.words) + 1)]  # TEXT: shortest first


def rank_candidates(
    compiled: CompiledGrammar,
    words: tuple[str, ...],
    active: Sequence[bool],
    min_word_similarity: float,
    ignore: frozenset[str] = frozenset(),
) -> list[int]:
    """Active sentences sharing words (or near spellings) with `words`, most shared first.

    Words in `ignore` (function words such as "the") are too common to count as evidence.
    """
    scores: dict[int, float] = {}
    for word in set(words) - ignore:
        hits = compiled.word_index.get(word)
        if hits is not None:
            for sentence_id in hits:
                scores[sentence_id] = scores.get(sentence_id, 0.0) + 1.0
        elif not is_int(word):
            for index, score in compiled.vocab.nearest(word, min_word_similarity, 3):
                for sentence_id in compiled.word_index[compiled.vocab.strings[index]]:
                    scores[sentence_id] = scores.get(sentence_id, 0.0) + score
        for sentence_id in compiled.list_word_index.get(word, ()):
            scores[sentence_id] = scores.get(sentence_id, 0.0) + 1.0
    ranked = sorted((-score, sid) for sid, score in scores.items() if active[sid])
    return [sentence_id for _, sentence_id in ranked]
