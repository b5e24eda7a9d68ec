"""Fuzzy matching: word-level edit distance between a transcript and a sentence automaton.

The table `best[state][i]` holds the cheapest way to reach `state` having used the first `i`
words; edges only go forward, so one pass over the states fills it. Prices, in words:

* a template word heard slightly wrong: (1 - similarity) rescaled so that the similarity floor
  costs a whole word ("crome" for "chrome" ~0.3, "wake" for "page" 1.0);
* a template word missing: 1; an extra word heard: 1 (a filler such as "uh" or "please": 0.1);
* one word heard as two ("fire fox"): its similarity to the two written together, plus 0.1.

Function words ("the", "to", "a") weigh half and may be missed or misheard entirely. Every other
template word must be heard at least approximately: "set the temperature to 50" is never "set
the volume to 50". Slots are never skipped, and a number out of its range is kept as a *problem*
so the matcher can say why it rejects a command instead of matching some other intent.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

from moonshine_live.grammar.compile import (
    LIST,
    NUMBER,
    TEXT,
    WORD,
    CompiledList,
    CompiledSentence,
    Edge,
)
from moonshine_live.grammar.fuzzy import similarity
from moonshine_live.grammar.normalize import is_int
from moonshine_live.grammar.recognize import Parse, SlotFill
from moonshine_live.grammar.schema import SlotValue

_LOGGER = logging.getLogger(__name__)

INF = math.inf


@dataclass(frozen=True)
class AlignCosts:
    """Prices of edits in fuzzy alignment (in words)."""

    insert: float = 1.0
    delete: float = 1.0
    filler_insert: float = 0.1
    fillers: frozenset[str] = frozenset()
    min_word_similarity: float = 0.5
    """Character similarity at which a misheard word costs a whole word."""
    split_penalty: float = 0.1
    """Extra cost when one word was heard as two ("fire fox")."""
    function_words: frozenset[str] = frozenset()
    """Template words that may be missed entirely; they also weigh `function_weight`."""
    function_weight: float = 0.5


class Move(NamedTuple):
    """What one step over an edge contributes to the parse."""

    weight: float
    """Template weight covered (words, weighted)."""
    value: SlotValue | None = None
    problem: str | None = None
    exact: bool = False


_Step = tuple[int, float, Move | None]  # (end position, cost, move)


class Aligner:
    """Fuzzy alignment of one transcript against sentences, sharing caches between them."""

    def __init__(self, words: tuple[str, ...], costs: AlignCosts) -> None:
        self.words = words
        self.costs = costs
        fillers = costs.fillers
        self.insert_costs = [costs.filler_insert if w in fillers else costs.insert for w in words]
        self._step_cache: dict[object, list[list[_Step] | None]] = {}
        self._heard: dict[str, bool] = {}
        self._by_initial: dict[str, list[str]] = {}
        for heard in (*words, *(a + b for a, b in itertools.pairwise(words))):
            self._by_initial.setdefault(heard[:1], []).append(heard)
        self._span_cache: dict[tuple[str, int, int], tuple[float, int, SlotValue] | None] = {}

    def align(self, sentence: CompiledSentence, min_score: float = 0.0) -> Parse | None:
        """Cheapest alignment of the transcript with a path through the sentence, or None.

        Paths that cannot score `min_score` or more are dropped early (None if all are).
        """
        automaton = sentence.automaton
        n = len(self.words)
        budget = (1.0 - min_score) * max(automaton.max_literal, n, 1) + 1e-9
        best = [[INF] * (n + 1) for _ in automaton.edges]
        back: list[list[tuple[int, int, Edge | None, Move | None] | None]] = [
            [None] * (n + 1) for _ in automaton.edges
        ]
        best[0][0] = 0.0
        insert_costs = self.insert_costs
        for state, edges in enumerate(automaton.edges):
            row, back_row = best[state], back[state]
            if min(row) > budget:
                continue  # nothing reaches this state cheaply enough
            for i in range(1, n + 1):  # extra words heard while in this state
                if row[i - 1] + insert_costs[i - 1] < row[i]:
                    row[i] = row[i - 1] + insert_costs[i - 1]
                    back_row[i] = (state, i - 1, None, None)
            outgoing = [(best[e.target], back[e.target], e, self._steps(e)) for e in edges]
            for i, here in enumerate(row):
                if here > budget:
                    continue
                for target_best, target_back, edge, steps_at in outgoing:
                    steps = steps_at[i]
                    if steps is None:
                        steps = steps_at[i] = _STEPS[edge.kind](self, edge, i)
                    for end, cost, move in steps:
                        if here + cost < target_best[end]:
                            target_best[end] = here + cost
                            target_back[end] = (state, i, edge, move)
        final = min(automaton.accepting, key=lambda state: best[state][n])
        if best[final][n] > budget:
            return None
        parse = self._trace(sentence, final, best[final][n], back)
        return parse if parse.score >= min_score else None

    def _steps(self, edge: Edge) -> list[list[_Step] | None]:
        """Per start position, the moves over edges like `edge`; filled in when first needed
        and shared by every sentence aligned with this transcript."""
        steps = self._step_cache.get(edge.key)
        if steps is None:
            steps = self._step_cache[edge.key] = [None] * (len(self.words) + 1)
        return steps

    def heard(self, word: str) -> bool:
        """True if `word` was heard at least approximately, alone or split in two.

        Only heard words with the same first letter are compared: recognisers rarely get the
        first sound wrong, and this test runs for many sentences per transcript.
        """
        found = self._heard.get(word)
        if found is None:
            floor = self.costs.min_word_similarity
            similar = self._by_initial.get(word[:1], ())
            found = any(substitution(word, heard, floor) < 1.0 for heard in similar)
            self._heard[word] = found
        return found

    def viable(self, sentence: CompiledSentence) -> bool:
        """Cheap test before aligning: of each word group the sentence needs, a word was heard
        at least approximately (groups holding a function word may be missed entirely), and
        each list or number slot it needs has something that fits."""
        function_words = self.costs.function_words
        automaton = sentence.automaton
        words_heard = all(
            any(self.heard(word) for word in group)
            for group in automaton.groups
            if group.isdisjoint(function_words)
        )
        return words_heard and all(self._fits(kind, name) for kind, name in automaton.slots_needed)

    def _fits(self, kind: int, list_name: str | None) -> bool:
        """True if some word could fill a slot of this kind (an integer for numbers).

        Lists are not tested here: finding near entries is the expensive part of aligning.
        """
        return kind != NUMBER or any(is_int(word) for word in self.words)

    def _trace(
        self, sentence: CompiledSentence, final: int, cost: float, back: list[list]
    ) -> Parse:
        state, i = final, len(self.words)
        fills: list[SlotFill] = []
        template_weight = 0.0
        wildcard = slot_tokens = exact_words = 0
        while back[state][i] is not None:
            previous, start, edge, move = back[state][i]
            if move is not None:
                template_weight += move.weight
                exact_words += int(move.exact and edge.kind == WORD)
            if edge is not None and edge.kind in (LIST, NUMBER, TEXT):
                assert edge.slot is not None and move is not None
                fills.append(SlotFill(edge.slot, edge.kind, move.value, start, i, move.problem))
                slot_tokens += i - start
                wildcard += (i - start) if edge.kind == TEXT else 0
            state, i = previous, start
        length = max(template_weight, len(self.words) - wildcard, 1.0)
        score = max(0.0, 1.0 - cost / length)
        fills.reverse()
        return Parse(sentence, tuple(fills), score, cost, wildcard, slot_tokens, exact_words)

    def list_span(
        self, entries: CompiledList, start: int, end: int
    ) -> tuple[float, int, SlotValue] | None:
        """(cost, entry token count, value) of the list entry closest to words[start:end]."""
        key = (entries.name, start, end)
        if key not in self._span_cache:
            self._span_cache[key] = self._closest_entry(entries, self.words[start:end])
        return self._span_cache[key]

    def _closest_entry(
        self, entries: CompiledList, span: tuple[str, ...]
    ) -> tuple[float, int, SlotValue] | None:
        if span in entries.by_tokens:
            return 0.0, len(span), entries.by_tokens[span]
        joined = "".join(span)
        penalty = self.costs.split_penalty
        if joined in entries.by_joined:
            tokens, value = entries.by_joined[joined]
            return penalty * max(1, abs(len(tokens) - len(span))), len(tokens), value
        floor = self.costs.min_word_similarity
        if not floor * entries.min_chars <= len(joined) <= entries.max_chars / max(floor, 0.01):
            return None  # too short or too long to be similar to any entry
        found = entries.nearest(joined, floor)
        if found is None:
            return None
        (tokens, value), score = found
        return _rescale(score, floor) * max(len(tokens), len(span)), len(tokens), value


def _rescale(score: float, floor: float) -> float:
    """Cost of a similarity: 0 when equal, 1 (a whole word) at or below the floor."""
    return min(1.0, (1.0 - score) / (1.0 - floor)) if floor < 1.0 else float(score < 1.0)


@functools.lru_cache(maxsize=1 << 16)
def substitution(expected: str, heard: str, floor: float) -> float:
    """Cost of hearing `heard` where the template says `expected` (0 same .. 1 different)."""
    if expected == heard:
        return 0.0
    if not (expected.isalpha() and heard.isalpha()):
        return 1.0  # numbers and key names ("42", "f5") are right or wrong, never close
    if abs(len(expected) - len(heard)) > (1.0 - floor) * max(len(expected), len(heard)):
        return 1.0  # too different in length to reach the floor
    return _rescale(similarity(expected, heard), floor)


def _word_steps(aligner: Aligner, edge: Edge, i: int) -> list[_Step]:
    words, costs = aligner.words, aligner.costs
    optional = edge.arg in costs.function_words  # may be missed or misheard entirely
    weight = costs.function_weight if optional else 1.0
    steps: list[_Step] = [(i, costs.delete * weight, Move(weight))] if optional else []
    if i < len(words):
        cost = substitution(edge.arg, words[i], costs.min_word_similarity)
        if cost < 1.0 or optional:
            steps.append((i + 1, cost * weight, Move(weight, exact=cost == 0.0)))
    if i + 1 < len(words) and words[i][:1] == edge.arg[:1] and words[i] != edge.arg:
        joined = words[i] + words[i + 1]  # "fire fox" for "firefox"
        split = substitution(edge.arg, joined, costs.min_word_similarity)
        if split < 1.0:
            steps.append((i + 2, (split + costs.split_penalty) * weight, Move(weight)))
    return steps


def _list_steps(aligner: Aligner, edge: Edge, i: int) -> list[_Step]:
    steps: list[_Step] = []
    last = min(len(aligner.words), i + edge.arg.max_len + 1)
    for end in range(i + 1, last + 1):
        found = aligner.list_span(edge.arg, i, end)
        if found is not None:
            cost, tokens, value = found
            steps.append((end, cost, Move(tokens, value, exact=cost == 0.0)))
    return steps


def _number_steps(aligner: Aligner, edge: Edge, i: int) -> list[_Step]:
    if i >= len(aligner.words) or not is_int(aligner.words[i]):
        return []
    value = int(aligner.words[i])
    low, high = edge.arg
    problem = (
        None if low <= value <= high else f"{{{edge.slot}}} = {value} is outside {low}..{high}"
    )
    return [(i + 1, 0.0, Move(1.0, value, problem, exact=True))]


def _text_steps(aligner: Aligner, edge: Edge, i: int) -> list[_Step]:
    return [(end, 0.0, Move(0.0)) for end in range(i + 1, len(aligner.words) + 1)]


_STEPS = {
    WORD: _word_steps,
    LIST: _list_steps,
    NUMBER: _number_steps,
    TEXT: _text_steps,
}
