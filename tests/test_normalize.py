"""Text normalisation: case, punctuation, symbols, hyphens, number words <-> digits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moonshine_live.grammar.normalize import is_int, normalize, number_to_words, tokenize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Set the volume to 50%.", "set the volume to 50 percent"),
        ("set the volume to fifty percent", "set the volume to 50 percent"),
        ("forty two", "42"),
        ("forty-two", "42"),
        ("twenty-five", "25"),
        ("one hundred", "100"),
        ("a hundred", "100"),
        ("one hundred and five", "105"),
        ("two thousand twenty four", "2024"),
        ("one million two hundred thousand", "1200000"),
        ("nineteen eighty four", "19 84"),
        ("one two three", "1 2 3"),
        ("zero", "0"),
        ("5", "5"),
        ("1,000 things", "1000 things"),
        ("minus five degrees", "-5 degrees"),
        ("-5 and 5-10", "-5 and 5 10"),
        ("3.5 apples", "3.5 apples"),
        ("Wi-Fi on", "wi fi on"),
        ("What's up?", "whats up"),
        ("rock & roll", "rock and roll"),
        ("ctrl+t", "ctrl plus t"),
        ("20°", "20 degrees"),
        ("Open   Firefox!!", "open firefox"),
        ("press F5, then mp3", "press f5 then mp3"),
        ("Café Straße", "cafe straße"),
        ("fourty", "40"),
        ("rock and roll", "rock and roll"),
        ("", ""),
        ("...", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_tokens_keep_their_source_span() -> None:
    tokens = tokenize("Take a note: Buy milk, eggs & bread!")
    assert tokens.words == ("take", "a", "note", "buy", "milk", "eggs", "and", "bread")
    assert tokens.original(3, 8) == "Buy milk, eggs & bread"
    assert tokens.original(0, 1) == "Take"
    assert tokens.original(2, 2) == ""


def test_merged_number_span_covers_all_its_words() -> None:
    tokens = tokenize("volume forty-two percent")
    assert tokens.words == ("volume", "42", "percent")
    assert tokens.original(1, 2) == "forty-two"


def test_drop_first_keeps_spans() -> None:
    tokens = tokenize("Computer, type Hello World").drop_first(1)
    assert tokens.words == ("type", "hello", "world")
    assert tokens.original(1, 3) == "Hello World"


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (42, "forty two"),
        (100, "one hundred"),
        (105, "one hundred five"),
        (1001, "one thousand one"),
        (-17, "minus seventeen"),
        (2_000_000, "two million"),
    ],
)
def test_number_to_words(number: int, words: str) -> None:
    assert number_to_words(number) == words


@given(st.integers(min_value=-(10**12) + 1, max_value=10**12 - 1))
def test_spelled_numbers_read_back_as_digits(number: int) -> None:
    assert tokenize(number_to_words(number)).words == (str(number),)


@given(st.text(max_size=80))
@settings(max_examples=300)
def test_normalize_is_idempotent_and_never_raises(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.lower() or not once.isascii()
    assert "  " not in once and once == once.strip()


@pytest.mark.parametrize(
    ("token", "expected"),
    [("42", True), ("-5", True), ("0", True), ("3.5", False), ("f5", False), ("٣", False)],
)
def test_is_int(token: str, expected: bool) -> None:
    assert is_int(token) is expected
