"""The grammar as a token automaton: every surface form and tokenization of every sentence of
the shipped grammars is accepted, other text is not, and compiling stays cheap."""

from __future__ import annotations

import random
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moonshine_live.grammar import load_grammar, loads_grammar
from moonshine_live.grammar.compile import compile_grammar
from moonshine_live.grammar.sample import iter_examples
from moonshine_live.grammar.tokens import TokenAutomaton, surface_pieces
from moonshine_live.model.tokenizer import Tokenizer

GRAMMARS_DIR = Path(__file__).parent.parent / "grammars"
SHIPPED = sorted(GRAMMARS_DIR.glob("*.toml"))
PER_INTENT = 12


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_bin()


@pytest.fixture(scope="module")
def pieces(tokenizer: Tokenizer) -> list[str]:
    return surface_pieces([tokenizer.piece(i) for i in range(tokenizer.vocab_size)])


@pytest.fixture(scope="module", params=[p.stem for p in SHIPPED])
def shipped(request, tokenizer, pieces) -> tuple[object, TokenAutomaton]:
    grammar = load_grammar([GRAMMARS_DIR / f"{request.param}.toml"])
    return grammar, TokenAutomaton(compile_grammar(grammar), pieces, tokenizer.eos_id)


def sentences(grammar) -> list[str]:
    found = []
    for name in grammar.intents:
        for numbers in ("digits", "words"):
            found += [e.text for e in iter_examples(grammar, name, numbers, limit=PER_INTENT)]
    return list(dict.fromkeys(found))


def surface_forms(text: str, rng: random.Random) -> list[str]:
    """How Moonshine may write a sentence: capitals, end punctuation, a comma, a hyphen."""
    words = text.split()
    capital = " " + words[0].capitalize() + (" " + " ".join(words[1:]) if words[1:] else "")
    forms = [" " + text, capital + ".", capital + "?", capital + "!", " " + text.upper()]
    if len(words) > 1:
        at = rng.randrange(len(words) - 1)
        joined = [*words[:at], words[at] + "-" + words[at + 1], *words[at + 2 :]]
        forms.append(" " + " ".join(joined) + ".")
        comma = [*words[:at], words[at] + ",", *words[at + 1 :]]
        forms.append(" " + " ".join(comma).capitalize())
    return forms


def walk_tokens(automaton: TokenAutomaton, ids: list[int]) -> bool:
    """Whether the automaton allows these tokens, then end-of-text."""
    state: int | None = automaton.start
    for token in ids:
        state = automaton.advance(state, token)
        if state is None:
            return False
    return automaton.advance(state, automaton.eos_id) is not None


_VOCABS: dict[int, dict[str, int]] = {}


def _vocab(tokenizer: Tokenizer) -> dict[str, int]:
    if id(tokenizer) not in _VOCABS:
        _VOCABS[id(tokenizer)] = tokenizer.backend.get_vocab()
    return _VOCABS[id(tokenizer)]


def random_tokenization(text: str, tokenizer: Tokenizer, rng: random.Random) -> list[int]:
    """`text` cut into random vocabulary pieces: not the tokenizer's own choice."""
    vocab = _vocab(tokenizer)
    surface = text.replace(" ", "▁")
    ids, at = [], 0
    while at < len(surface):
        fits = [n for n in range(1, min(8, len(surface) - at) + 1) if surface[at : at + n] in vocab]
        n = rng.choice(fits)
        ids.append(vocab[surface[at : at + n]])
        at += n
    return ids


def test_every_sentence_in_every_surface_form_and_tokenization(shipped, tokenizer) -> None:
    grammar, automaton = shipped
    rng = random.Random(0)
    texts = sentences(grammar)
    assert len(texts) > 50
    for text in texts:
        for form in surface_forms(text, rng):
            assert automaton.accepts_text(form), form
        form = rng.choice(surface_forms(text, rng))
        assert walk_tokens(automaton, tokenizer.encode(form.strip())), form
        assert walk_tokens(automaton, random_tokenization(form, tokenizer, rng)), form


def test_the_tokenizers_own_tokens_start_with_a_space(shipped, tokenizer) -> None:
    """Moonshine's first token carries the leading space ("▁Turn"); both ways are accepted."""
    grammar, automaton = shipped
    text = sentences(grammar)[0]
    assert tokenizer.piece(tokenizer.encode(text)[0]).startswith("▁")
    assert automaton.accepts_text(text) and automaton.accepts_text(" " + text)


NOT_COMMANDS = [
    " What a lovely day.",
    " I think we should go home now.",
    " The weather is nice today.",
    "",
    " .",
    " Turn,, on",
]


def test_other_text_is_refused(shipped) -> None:
    _, automaton = shipped
    for text in NOT_COMMANDS:
        assert not automaton.accepts_text(text), text


def test_near_misses_are_refused(shipped) -> None:
    """A sentence with one word changed, added or missing is not in the grammar (unless the
    grammar also has that one), and punctuation cannot loop."""
    grammar, automaton = shipped
    texts = sentences(grammar)
    known = {" ".join(t.split()) for t in texts}
    rng = random.Random(1)
    refused = 0
    for text in texts[:200]:
        words = text.split()
        at = rng.randrange(len(words))
        for variant in (
            [*words[:at], "banana", *words[at + 1 :]],
            [*words[:at], "zebra", *words[at:]],
        ):
            candidate = " ".join(variant)
            if candidate in known or grammar_has_free_text(grammar):
                continue
            assert not automaton.accepts_text(" " + candidate), candidate
            refused += 1
        assert not automaton.accepts_text(" " + text + ".."), text
        if " " in text:
            assert not automaton.accepts_text(" " + text.replace(" ", "  ", 1)), text
    assert refused > 50 or grammar_has_free_text(grammar)


def grammar_has_free_text(grammar) -> bool:
    return any(
        type(slot).__name__ == "TextSlot"
        for intent in grammar.intents.values()
        for slot in intent.slots.values()
    )


def test_end_of_text_only_where_a_sentence_ends(shipped, tokenizer) -> None:
    grammar, automaton = shipped
    for text in sentences(grammar)[:100]:
        words = text.split()
        prefix = " " + " ".join(words[:-1])
        if len(words) > 1 and not automaton.accepts_text(prefix):
            state: int | None = automaton.start
            for char in prefix:
                state = automaton.step_char(state, char)
                assert state is not None, prefix
            ids, _ = automaton.allowed(state)
            assert tokenizer.eos_id not in ids.tolist()


LIST_GRAMMAR = """
[lists.item]
{entries}

[intents.order]
say = ["(order|buy) [a|an|some] {{item}} [please]"]
slots = {{ item = "item" }}
"""


def test_a_five_thousand_entry_list_compiles_fast_and_small(tokenizer, pieces) -> None:
    rng = random.Random(2)
    syllables = ["ka", "lo", "mi", "ren", "tu", "sha", "vo", "bel", "dor", "fin", "gra", "po"]
    names = set()
    while len(names) < 5000:
        words = [
            "".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(rng.randint(1, 3))
        ]
        names.add(" ".join(words))
    entries = "\n".join(f'"{n}" = "{n.replace(" ", "_")}"' for n in sorted(names))
    grammar = loads_grammar(LIST_GRAMMAR.format(entries=entries), "list.toml")
    compiled = compile_grammar(grammar)
    tracemalloc.start()
    started = time.perf_counter()
    automaton = TokenAutomaton(compiled, pieces, tokenizer.eos_id)
    built_s = time.perf_counter() - started
    grown_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    states = len(automaton.nfa.edges)
    print(f"5000 entries: {states} word states, {built_s * 1000:.0f} ms, +{grown_mb:.0f} MB")
    assert built_s < 10 and grown_mb < 500
    for name in rng.sample(sorted(names), 50):
        assert automaton.accepts_text(f" Order some {name}, please.")
        assert walk_tokens(automaton, tokenizer.encode(f"Buy a {name}"))
    assert not automaton.accepts_text(" Order some zzzz")


def active_state(intent) -> tuple[frozenset[str], str]:
    from moonshine_live.grammar.schema import ANY_MODE, DEFAULT_MODE

    mode = DEFAULT_MODE if ANY_MODE in intent.modes else sorted(intent.modes)[0]
    return intent.contexts, mode


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_what_the_automaton_accepts_the_matcher_matches_exactly(data) -> None:
    """Words of real sentences, dropped, repeated and shuffled: whenever the automaton accepts
    the result, the matcher finds it exactly (the two agree on what the grammar says)."""
    automaton, matcher, texts = _home()
    words = data.draw(st.sampled_from(texts)).split()
    words = data.draw(st.lists(st.sampled_from(words), min_size=1, max_size=len(words) + 1))
    text = " " + " ".join(words)
    if automaton.accepts_text(text):
        results = [
            matcher.match(text, *active_state(intent))
            for intent in matcher.grammar.intents.values()
        ]
        assert any(getattr(r, "exact", False) for r in results), text


_HOME: list = []


def _home():
    if not _HOME:
        from moonshine_live.grammar.matcher import Matcher

        tokenizer = Tokenizer.from_bin()
        pieces = surface_pieces([tokenizer.piece(i) for i in range(tokenizer.vocab_size)])
        grammar = load_grammar([GRAMMARS_DIR / "home.toml"])
        matcher = Matcher(grammar)
        automaton = TokenAutomaton(matcher.compiled, pieces, tokenizer.eos_id)
        _HOME.extend([automaton, matcher, sentences(grammar)])
    return _HOME


def test_every_accepted_form_matches_its_intent_exactly(shipped) -> None:
    from moonshine_live.grammar.matcher import Matcher

    grammar, automaton = shipped
    matcher = Matcher(grammar)
    rng = random.Random(3)
    for name, intent in grammar.intents.items():
        for example in iter_examples(grammar, name, "words", limit=6):
            for form in surface_forms(example.text, rng):
                assert automaton.accepts_text(form), form
                result = matcher.match(form, *active_state(intent))
                assert getattr(result, "exact", False), (form, result)


WAKE_GRAMMAR = """
[grammar]
wake = "[hey] computer"
wake_required = {required}

[intents.open]
say = ["open firefox"]
"""


@pytest.mark.parametrize("required", [False, True])
def test_the_wake_phrase_comes_first_optional_or_required(tokenizer, pieces, required) -> None:
    grammar = loads_grammar(WAKE_GRAMMAR.format(required=str(required).lower()), "wake.toml")
    automaton = TokenAutomaton(compile_grammar(grammar), pieces, tokenizer.eos_id)
    assert automaton.accepts_text(" Computer, open Firefox.")
    assert automaton.accepts_text(" Hey computer, open firefox")
    assert automaton.accepts_text(" Open Firefox.") is not required
    assert not automaton.accepts_text(" Computer.")
    assert not automaton.accepts_text(" Open Firefox, computer.")


def test_one_apostrophe_per_word(tokenizer, pieces) -> None:
    """ "what's" reads as "whats" (as the normaliser joins it); a word cannot hide letters
    between several apostrophes ("wh'at's")."""
    text = '[intents.time]\nsay = ["what\'s the time"]\n'
    automaton = TokenAutomaton(compile_grammar(loads_grammar(text, "t.toml")), pieces, 2)
    assert automaton.accepts_text(" What's the time?")
    assert automaton.accepts_text(" Whats the time")
    assert not automaton.accepts_text(" Wh'at's the time?")
    assert not automaton.accepts_text(" What' s the time?")


def test_words_are_written_only_the_ways_words_are_written(tokenizer, pieces) -> None:
    """Lower case, capitalised or all capitals, ASCII letters, an apostrophe only before a
    contraction's ending: the spellings a beam would otherwise fill with ("T'wêLvê", "w'arm",
    "C'OlD", "Stărt") are refused, so the sentence's probability is not spread over them."""
    text = (
        '[intents.time]\nsay = ["what\'s the time", "I\'m cold", "set a timer for twelve o\'clock"]'
        "\n"
        '[intents.tv]\nsay = ["turn on the tv"]\n'
    )
    automaton = TokenAutomaton(compile_grammar(loads_grammar(text, "t.toml")), pieces, 2)
    for good in (" What's the time?", " I'm cold.", " I'M COLD", " Set a timer for 12 o'clock.",
                 " Turn on the TV.", " TURN ON THE TV", " Turn on the Tv"):  # fmt: skip
        assert automaton.accepts_text(good), good
    for bad in (" I'm c'old", " I'm CoLd", " I'm cOLD", " Wha't's the time", " W'hats the time",
                " I'm cóld", " Turn ön the TV", " TurN on the TV", " I'm cold'"):  # fmt: skip
        assert not automaton.accepts_text(bad), bad


SETTLED_GRAMMAR = """
[lists.app]
"firefox" = "firefox"
"firefox settings" = "firefox-settings"
"terminal" = "terminal"

[intents.open]
say = ["open {app} [please]"]
slots = { app = "app" }

[intents.lights]
say = ["turn on the lights", "turn on the lights in the kitchen {level}"]
slots = { level = "1..9" }

[intents.close]
say = ["close [the] window [now]"]
"""


@pytest.mark.parametrize(
    ("text", "settled"),
    [
        (" Open terminal", True),  # only "please" may follow: the same command
        (" Open terminal, please.", True),
        (" Open Firefox", False),  # "settings" would make it another app
        (" Turn on the lights", False),  # "in the kitchen ..." fills a slot
        (" Close the window", True),
        (" Close the", False),  # not a command yet
    ],
)
def test_a_command_is_settled_when_no_words_can_change_it(tokenizer, pieces, text, settled):
    grammar = loads_grammar(SETTLED_GRAMMAR, "settled.toml")
    automaton = TokenAutomaton(compile_grammar(grammar), pieces, tokenizer.eos_id)
    state: int | None = automaton.start
    for char in text:
        state = automaton.step_char(state, char)
        assert state is not None, text
    assert automaton.settled(state) is settled
