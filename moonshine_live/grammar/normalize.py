"""Text normalisation shared by grammar templates and transcripts.

Both sides go through the same function, so "Set the volume to 50%." and the template
"set the volume to fifty percent" meet as the tokens ``set the volume to 50 percent``:
lower case, punctuation dropped, hyphens split ("twenty-five", "wi-fi"), apostrophes joined
("what's" -> "whats"), "%" -> "percent", and number words turned into digits ("forty two" ->
"42", "one hundred and five" -> "105", "nineteen eighty four" -> "19 84").
Every token remembers the span of the original text it came from, so free-text slots can hand
back what was said with its casing and inner punctuation.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

_LOGGER = logging.getLogger(__name__)

SYMBOL_WORDS = {"%": "percent", "&": "and", "+": "plus", "°": "degrees"}
"""Symbols that are spoken as words; each becomes its own token."""

SIGN_WORDS = frozenset({"minus", "negative"})
"""Words that make the number right after them negative ("minus five" -> "-5")."""

UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9,
}  # fmt: skip
TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
TENS_MISSPELLED = {"fourty": 40}
"""Spellings speech recognisers produce that are not words; read as numbers anyway."""
HUNDRED = "hundred"
SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
NUMBER_WORDS = frozenset(UNITS) | frozenset(TEENS) | frozenset(TENS) | frozenset(TENS_MISSPELLED)
NUMBER_WORDS |= frozenset(SCALES) | {HUNDRED}

_WORD_OF_UNIT = {v: k for k, v in UNITS.items()}
_WORD_OF_TEEN = {v: k for k, v in TEENS.items()}
_WORD_OF_TENS = {v: k for k, v in TENS.items()}

_SYMBOLS = "".join(SYMBOL_WORDS)
_TOKEN_RE = re.compile(
    # a number not glued to letters: "-5", "3.5", "1,000" (thousands separators allowed)
    r"(?<![^\W_])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![^\W_])"
    # else a run of letters and digits, apostrophes inside kept for now: "mp3", "what's"
    r"|[^\W_]+(?:['’][^\W_]+)*"
    # else one spoken symbol
    rf"|[{re.escape(_SYMBOLS)}]"
)
_NUMBER_KINDS = (
    {w: ("unit", v) for w, v in UNITS.items() if v}
    | {"zero": ("zero", 0)}
    | {w: ("teen", v) for w, v in TEENS.items()}
    | {w: ("tens", v) for w, v in (TENS | TENS_MISSPELLED).items()}
    | {HUNDRED: ("hundred", 100)}
    | {w: ("scale", v) for w, v in SCALES.items()}
)
# Which kind of number word may follow which: "twenty" + "five", "hundred" + "five", but not
# "five" + "six" or "nineteen" + "eighty" (those start a new number).
_MAY_FOLLOW = {
    "unit": {None, "tens", "hundred", "scale"},
    "teen": {None, "hundred", "scale"},
    "tens": {None, "hundred", "scale"},
    "hundred": {None, "unit", "teen", "tens"},
    "scale": {None, "unit", "teen", "tens", "hundred"},
    "zero": {None},
}
_NUMBER_STARTS = NUMBER_WORDS | SIGN_WORDS | {"a"}
"""Words that may begin a spelled-out number; texts without any skip the number pass."""
_SMALL = ("unit", "teen", "tens")
_MAX_SPOKEN = 10**12
"""number_to_words spells numbers below this; larger ones stay digits."""


@dataclass(frozen=True)
class Tokens:
    """Normalised tokens of one text and where each came from."""

    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    """(start, end) character offsets of each token in `source`."""
    source: str
    """The text the spans index: the input, NFKC-normalised."""

    def original(self, start: int, end: int) -> str:
        """The source text covered by tokens[start:end], punctuation inside kept."""
        if start >= end:
            return ""
        return self.source[self.spans[start][0] : self.spans[end - 1][1]]

    def __len__(self) -> int:
        return len(self.words)

    def drop_first(self, count: int) -> Tokens:
        """The same tokens without the first `count` (e.g. a wake phrase)."""
        return Tokens(self.words[count:], self.spans[count:], self.source)


def normalize(text: str) -> str:
    """Normalised text as one string of space-separated tokens."""
    return " ".join(tokenize(text).words)


def tokenize(text: str) -> Tokens:
    """Split `text` into normalised tokens with their spans in the (NFKC) source."""
    source = text if text.isascii() else unicodedata.normalize("NFKC", text)
    lowered = source.lower() if source.isascii() else _fold_accents(source.lower())
    if len(lowered) != len(source):  # a few letters grow when folded; index the folded text
        source = lowered
    words: list[str] = []
    spans: list[tuple[int, int]] = []
    for found in _TOKEN_RE.finditer(lowered):
        word = found.group()
        word = SYMBOL_WORDS.get(word) or word.replace("'", "").replace("’", "").replace(",", "")
        words.append(word)
        spans.append(found.span())
    return _numbers_to_digits(words, spans, source)


def _fold_accents(text: str) -> str:
    """Drop combining accents ("café" -> "cafe"): recognisers are inconsistent about them."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def is_int(token: str) -> bool:
    """True for a normalised integer token such as "42" or "-5"."""
    digits = token[1:] if token[:1] == "-" else token
    return digits.isascii() and digits.isdigit()


def _numbers_to_digits(words: list[str], spans: list[tuple[int, int]], source: str) -> Tokens:
    if _NUMBER_STARTS.isdisjoint(words):
        return Tokens(tuple(words), tuple(spans), source)
    out_words: list[str] = []
    out_spans: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        if words[i] not in _NUMBER_STARTS:
            out_words.append(words[i])
            out_spans.append(spans[i])
            i += 1
            continue
        sign = words[i] in SIGN_WORDS and i + 1 < len(words)
        value, end = _read_number(words, i + 1 if sign else i)
        if value is None and sign and is_int(words[i + 1]) and not words[i + 1].startswith("-"):
            value, end = int(words[i + 1]), i + 2
        if value is None:
            out_words.append(words[i])
            out_spans.append(spans[i])
            i += 1
            continue
        out_words.append(str(-value if sign else value))
        out_spans.append((spans[i][0], spans[end - 1][1]))
        i = end
    return Tokens(tuple(out_words), tuple(out_spans), source)


def _read_number(words: list[str], start: int) -> tuple[int | None, int]:
    """Read the longest spelled-out number at `start`; (value, end) or (None, start)."""
    total, current, last, scale_limit = 0, 0, None, _MAX_SPOKEN * 1000
    j = start
    while j < len(words):
        following = _kind(words[j + 1]) if j + 1 < len(words) else None
        kind, value = _NUMBER_KINDS.get(words[j], (None, 0))
        if words[j] == "a" and j == start and following in ("hundred", "scale"):
            kind, value = "unit", 1  # "a hundred", "a thousand"
        elif words[j] == "and" and last in ("hundred", "scale") and following in _SMALL:
            j += 1  # "one hundred and five"
            continue
        if kind is None or last not in _MAY_FOLLOW[kind]:
            break
        if kind == "hundred":
            current = (current or 1) * 100
        elif kind == "scale":
            if value >= scale_limit:
                break
            total, current, scale_limit = total + (current or 1) * value, 0, value
        else:
            current += value
        last = kind
        j += 1
    if last is None:
        return None, start
    return total + current, j


def _kind(word: str) -> str | None:
    return _NUMBER_KINDS.get(word, (None, 0))[0]


def number_to_words(number: int) -> str:
    """Spell an integer the way a recogniser writes it: 42 -> "forty two"."""
    if number < 0:
        return "minus " + number_to_words(-number)
    if number == 0:
        return "zero"
    if number >= _MAX_SPOKEN:
        return str(number)
    parts: list[str] = []
    for name, scale in sorted(SCALES.items(), key=lambda item: -item[1]):
        if number >= scale:
            parts.append(f"{_below_thousand(number // scale)} {name}")
            number %= scale
    if number:
        parts.append(_below_thousand(number))
    return " ".join(parts)


def _below_thousand(number: int) -> str:
    parts: list[str] = []
    if number >= 100:
        parts.append(f"{_WORD_OF_UNIT[number // 100]} {HUNDRED}")
        number %= 100
    if number >= 20:
        parts.append(_WORD_OF_TENS[number // 10 * 10])
        number %= 10
    if number >= 10:
        parts.append(_WORD_OF_TEEN[number])
    elif number:
        parts.append(_WORD_OF_UNIT[number])
    return " ".join(parts)
