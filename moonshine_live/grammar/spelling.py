"""How the model may write a word of a grammar: its case, its letters, its apostrophe.

Why: a search within a grammar that lets every spelling through fills its beam with spellings of
one word ("T'w", "T'u", "T'O", "T'wêLvê") that the normaliser reads alike, and the probability
of the sentence is spread over them. A word is written lower case, capitalised or in capitals,
in ASCII letters, with an apostrophe only where English has one ("what's", "I'd", "o'clock").
"""

from __future__ import annotations

import unicodedata

LOWER, ONE_UPPER, TITLE, CAPS = range(4)
"""How the word being written is cased so far: "light", "L", "Light", "LI"/"TV"."""

_PERSONS = ("i", "you", "he", "she", "it", "we", "they", "that", "there", "who")
CONTRACTIONS: dict[str, tuple[str, ...]] = {
    **{stem: ("s",) for stem in ("what", "that", "it", "let", "he", "she", "there", "here",
                                 "who", "where", "how", "when", "why")},
    **{stem: ("d", "ll") for stem in _PERSONS},
    **{stem: ("re", "ve") for stem in ("you", "we", "they", "who")},
    "i": ("m", "d", "ll", "ve"),
    **{stem: ("t",) for stem in ("don", "doesn", "didn", "can", "won", "isn", "aren", "wasn",
                                 "weren", "shouldn", "couldn", "wouldn", "haven", "hasn", "ain")},
    "o": ("clock",),
}  # fmt: skip
"""Where an English word may have an apostrophe: after these letters, before these endings
("what's", "I'd", "don't", "I'm", "you're", "we'll", "I've", "o'clock"); nowhere else."""


def next_shape(
    case: int, after: str | None, partial: str, char: str, folded: str, first: bool
) -> tuple[int, str | None] | None:
    """The shape (case, letters since the apostrophe) of a word after one more character
    `char` (lower-cased and unaccented: `folded`), from its shape before it and the letters
    written so far (`partial`, `first`: none); None when no word is written so."""
    if not char.isascii():
        return None
    if first:
        return (ONE_UPPER if char.isupper() else LOWER), None
    if char.isupper():
        case = {ONE_UPPER: CAPS, CAPS: CAPS}.get(case, -1)
    elif char.islower():
        case = {LOWER: LOWER, ONE_UPPER: TITLE, TITLE: TITLE}.get(case, -1)
    if case < 0:
        return None
    if after is not None and after != "*":
        stem = partial[: len(partial) - len(after)]
        after += folded
        if not any(ending.startswith(after) for ending in CONTRACTIONS.get(stem, ())):
            return None
    return case, after


SEPARATORS = frozenset(" -,")
"""Characters the normaliser reads as a word boundary."""
END_PUNCTUATION = frozenset(".?!")
"""Where a sentence may end; the normaliser drops it."""


def reading(piece: str) -> str:
    """A vocabulary piece as the normaliser reads it: lower case without accents, separators
    one space, end punctuation gone (" Top," -> " top "): pieces of hypotheses that read alike
    join into the same text."""
    out = []
    for char in piece:
        if char in SEPARATORS:
            out.append(" ")
        elif char == "’":
            out.append("'")
        elif char not in END_PUNCTUATION:
            out.append(fold(char))
    return "".join(out)


def fold(char: str) -> str:
    """Lower case without accents: "É" -> "e"."""
    decomposed = unicodedata.normalize("NFKD", char.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))
