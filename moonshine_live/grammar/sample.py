"""Sentences a grammar accepts, with the slot values they should produce.

Used by ``grammar check`` to print examples per intent, by the checker to find intents that
overlap, and by tests to prove every rendering of every shipped sentence matches.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from moonshine_live.grammar.normalize import number_to_words
from moonshine_live.grammar.schema import (
    Grammar,
    Intent,
    ListSlot,
    RangeSlot,
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

SAMPLE_TEXT = (
    "buy milk",
    "call the dentist tomorrow",
    "hello world",
    "remember the blue folder",
)
"""Free text put into ``*`` slots: plain words that complete no command of their own."""

MAX_RENDERINGS = 5000
"""Most structural renderings enumerated per sentence (optional x alternative products grow
fast; the first ones already cover every branch at least once in practice)."""


@dataclass(frozen=True)
class Example:
    """A sentence an intent accepts and the slots a match of it must carry."""

    intent: str
    text: str
    slots: Mapping[str, SlotValue]


def iter_examples(
    grammar: Grammar, intent_name: str, numbers: str = "digits", limit: int | None = None
) -> Iterator[Example]:
    """Every rendering of every sentence of an intent (optional parts with and without,
    each alternative), slots filled with varying values; numbers as "digits" or "words"."""
    if numbers not in ("digits", "words"):
        raise ValueError(f"numbers = {numbers!r}: use 'digits' or 'words'")
    intent = grammar.intents[intent_name]
    count = 0
    for sentence in intent.sentences:
        renderings = _render(sentence.expr, grammar)
        for pieces in itertools.islice(renderings, MAX_RENDERINGS):
            yield _fill(intent, pieces, grammar, count, numbers)
            count += 1
            if limit is not None and count >= limit:
                return


def examples(grammar: Grammar, intent_name: str, n: int = 3) -> list[str]:
    """Up to `n` varied example sentences of an intent, spread over its sentences."""
    intent = grammar.intents[intent_name]
    per_sentence = [list(itertools.islice(_render(s.expr, grammar), 64)) for s in intent.sentences]
    interleaved = [
        pieces
        for round_robin in itertools.zip_longest(*per_sentence)
        for pieces in round_robin
        if pieces is not None
    ]
    chosen: list[str] = []
    for k in range(min(n, len(interleaved))):
        pieces = interleaved[k * len(interleaved) // min(n, len(interleaved))]
        text = _fill(intent, pieces, grammar, k, "digits").text
        if text not in chosen:
            chosen.append(text)
    return chosen


Piece = str | SlotRef


def _render(node: Node, grammar: Grammar) -> Iterator[tuple[Piece, ...]]:
    """Each way to say `node`, as words and slot references."""
    if isinstance(node, Word):
        yield (node.text,)
    elif isinstance(node, SlotRef):
        yield (node,)
    elif isinstance(node, Sequence):
        yield from _render_sequence(node.items, grammar)
    elif isinstance(node, Alternative):
        for option in node.options:
            yield from _render(option, grammar)
    elif isinstance(node, Optional):
        yield from _render(node.item, grammar)
        yield ()
    elif isinstance(node, RuleRef):
        yield from _render(grammar.rules[node.name].expr, grammar)


def _render_sequence(items: tuple[Node, ...], grammar: Grammar) -> Iterator[tuple[Piece, ...]]:
    if not items:
        yield ()
        return
    for head in _render(items[0], grammar):
        for tail in _render_sequence(items[1:], grammar):
            yield head + tail


def _fill(
    intent: Intent, pieces: tuple[Piece, ...], grammar: Grammar, index: int, numbers: str
) -> Example:
    words: list[str] = []
    slots: dict[str, SlotValue] = {}
    for position, piece in enumerate(pieces):
        if isinstance(piece, str):
            words.append(piece)
            continue
        said, value = _slot_value(intent.slots[piece.name], grammar, index + position, numbers)
        words.append(said)
        slots[piece.name] = value
    for name, value in intent.defaults.items():
        slots.setdefault(name, value)
    return Example(intent.name, " ".join(words), slots)


def _slot_value(
    slot_type: SlotType, grammar: Grammar, index: int, numbers: str
) -> tuple[str, SlotValue]:
    """What to say for a slot and the value it must give."""
    if isinstance(slot_type, ListSlot):
        entries = grammar.lists[slot_type.list_name].entries
        entry = entries[index % len(entries)]
        return entry.spoken, entry.value
    if isinstance(slot_type, RangeSlot):
        low, high = slot_type.low, slot_type.high
        choices = sorted({low, high, (low + high) // 2, min(high, low + 42)})
        value = choices[index % len(choices)]
        return (number_to_words(value) if numbers == "words" else str(value)), value
    text = SAMPLE_TEXT[index % len(SAMPLE_TEXT)]
    return text, text
