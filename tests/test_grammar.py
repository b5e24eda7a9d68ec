"""Grammar files: template parser, loader, validation errors with file:line:column, checker."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moonshine_live.errors import GrammarError
from moonshine_live.grammar import (
    DEFAULT_MODE,
    Alternative,
    CallAction,
    Grammar,
    Intent,
    KeysAction,
    ListEntry,
    ListSlot,
    Optional,
    Position,
    RangeSlot,
    RuleRef,
    RunAction,
    Sentence,
    Sequence,
    SlotList,
    SlotRef,
    SpawnAction,
    TextSlot,
    TypeAction,
    Word,
    check_grammar,
    examples,
    load_grammar,
    loads_grammar,
    parse_template,
)
from moonshine_live.grammar.matcher import Matcher

GRAMMARS_DIR = Path(__file__).parent.parent / "grammars"
SHIPPED = sorted(GRAMMARS_DIR.glob("*.toml"))
AT = Position("t.toml", 1, 1)

ISSUE_EXAMPLE = """\
[lists.app]                 # spoken form = value
"firefox" = "firefox"
"google chrome" = "chrome"
"chrome" = "chrome"

[intents.set_volume]
say = ["set [the] volume to {level} [percent]", "volume (at|to) {level}"]
slots = { level = "0..100" }     # integer range, spoken as words or digits

[intents.open_app]
say = ["(open|launch|start) {app}"]   # {app} uses [lists.app]
spawn = ["{app}"]

[intents.note]
say = ["take a note {text}"]
slots = { text = "*" }               # free text (wildcard)
call = "take_note"
"""


def write(tmp_path: Path, text: str, name: str = "g.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(text: str, file: str = "g.toml") -> GrammarError:
    with pytest.raises(GrammarError) as caught:
        loads_grammar(text, file)
    return caught.value


# --- templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("open firefox", Sequence((Word("open"), Word("firefox")))),
        (
            "set [the] volume to {level} [percent]",
            Sequence(
                (
                    Word("set"),
                    Optional(Word("the")),
                    Word("volume"),
                    Word("to"),
                    SlotRef("level"),
                    Optional(Word("percent")),
                )
            ),
        ),
        (
            "(open|launch|start) {app}",
            Sequence((Alternative((Word("open"), Word("launch"), Word("start"))), SlotRef("app"))),
        ),
        (
            "(a|b c) <dir>",
            Sequence((Alternative((Word("a"), Sequence((Word("b"), Word("c"))))), RuleRef("dir"))),
        ),
        ("Volume Fifty-Five %", Sequence((Word("volume"), Word("55"), Word("percent")))),
        (
            "turn on the light[s]",
            Sequence(
                (
                    Word("turn"),
                    Word("on"),
                    Word("the"),
                    Alternative((Word("light"), Word("lights"))),
                )
            ),
        ),
        ("(re|un)do", Sequence((Alternative((Word("redo"), Word("undo"))),))),
        ("open|close", Sequence((Alternative((Word("open"), Word("close"))),))),
        ("[a|b] c", Sequence((Optional(Alternative((Word("a"), Word("b")))), Word("c")))),
    ],
)
def test_parse_template(template: str, expected: Sequence) -> None:
    assert parse_template(template, AT) == expected


@pytest.mark.parametrize(
    ("template", "column", "message"),
    [
        ("(open firefox", 1, "unclosed '('"),
        ("open firefox)", 13, "unexpected ')'"),
        ("open [the firefox", 6, "unclosed '['"),
        ("(open]", 6, "closed by ']'"),
        ("open {app", 6, "unclosed '{'"),
        ("open {1app}", 6, "bad slot name"),
        ("open <my rule>", 6, "bad rule name"),
        ("open }", 6, "unexpected '}'"),
        ("open (|x)", 7, "empty alternative"),
        ("open []", 6, "empty optional"),
        ("open ()", 6, "empty group"),
        ("[open]", 1, "can match silence"),
        ("", 1, "no words"),
        ("open x{app}", 7, "without spaces"),
        ("[[the]] x", 1, "already optional"),
        ("(" * 40 + "x" + ")" * 40, 33, "nested deeper"),
    ],
)
def test_template_errors_carry_the_column(template: str, column: int, message: str) -> None:
    with pytest.raises(GrammarError) as caught:
        parse_template(template, Position("t.toml", 7, 10))
    error = caught.value
    assert (error.file, error.line, error.column) == ("t.toml", 7, 10 + column - 1)
    assert message in error.message


# --- loading -----------------------------------------------------------------------------------


def test_issue_example_loads_to_exact_records(tmp_path: Path) -> None:
    path = write(tmp_path, ISSUE_EXAMPLE)
    file = str(path)
    grammar = load_grammar(path)
    assert grammar.files == (file,)
    assert grammar.lists == {
        "app": SlotList(
            "app",
            (
                ListEntry("firefox", ("firefox",), "firefox"),
                ListEntry("google chrome", ("google", "chrome"), "chrome"),
                ListEntry("chrome", ("chrome",), "chrome"),
            ),
            Position(file, 1, 1),
        )
    }
    assert grammar.intents["set_volume"] == Intent(
        name="set_volume",
        sentences=(
            Sentence(
                "set [the] volume to {level} [percent]",
                parse_template("set [the] volume to {level} [percent]", AT),
                Position(file, 7, 9),
            ),
            Sentence(
                "volume (at|to) {level}",
                Sequence((Word("volume"), Alternative((Word("at"), Word("to"))), SlotRef("level"))),
                Position(file, 7, 50),
            ),
        ),
        slots={"level": RangeSlot(0, 100)},
        defaults={},
        contexts=frozenset(),
        modes=frozenset({DEFAULT_MODE}),
        actions=(),
        set_mode=None,
        description="",
        where=Position(file, 6, 1),
    )
    open_app = grammar.intents["open_app"]
    assert open_app.slots == {"app": ListSlot("app")}
    assert open_app.actions == (SpawnAction(("{app}",)),)
    note = grammar.intents["note"]
    assert note.slots == {"text": TextSlot()}
    assert note.actions == (CallAction("take_note"),)
    assert list(grammar.intents) == ["set_volume", "open_app", "note"]
    assert grammar.wake is None and grammar.rules == {}


def test_rules_contexts_modes_wake_and_actions() -> None:
    grammar = loads_grammar(
        """
[grammar]
wake = "[hey] computer"
wake_required = true

[lists.direction]
up = 4
down = 5

[rules]
polite = ["please", "kindly"]
scroll_word = "(scroll|move)"

[intents.scroll]
say = "<scroll_word> {direction} [<polite>]"
context = ["browser", "editor"]
run = ["xdotool", "click", "{direction}"]

[intents.sleep]
say = "go to sleep"
set_mode = "sleep"
mode = "*"

[intents.search]
say = "search for {query}"
slots = { query = "*" }
actions = [{ keys = "ctrl+l" }, { type = "{query}" }, { keys = ["Return", "Tab"] }]
""",
        "g.toml",
    )
    assert grammar.wake is not None and grammar.wake.required
    assert grammar.wake.expr == Sequence((Optional(Word("hey")), Word("computer")))
    assert grammar.rules["polite"].expr == Sequence(
        (Alternative((Sequence((Word("please"),)), Sequence((Word("kindly"),)))),)
    )
    scroll = grammar.intents["scroll"]
    assert scroll.contexts == {"browser", "editor"}
    assert scroll.slots == {"direction": ListSlot("direction")}
    assert scroll.actions == (RunAction(("xdotool", "click", "{direction}")),)
    assert grammar.intents["sleep"].set_mode == "sleep"
    assert grammar.intents["sleep"].modes == {"*"}
    assert grammar.intents["search"].actions == (
        KeysAction(("ctrl+l",)),
        TypeAction("{query}"),
        KeysAction(("Return", "Tab")),
    )
    assert grammar.contexts == {"browser", "editor"}
    assert grammar.modes == {"command", "sleep"}
    assert grammar.lists["direction"].entries[0] == ListEntry("up", ("up",), 4)


def test_several_files_merge_in_order(tmp_path: Path) -> None:
    first = write(tmp_path, '[lists.color]\nred = "#f00"\n', "a.toml")
    second = write(
        tmp_path, '[intents.paint]\nsay = "paint it {color}"\nrun = ["echo", "{color}"]\n', "b.toml"
    )
    grammar = load_grammar([first, second])
    assert isinstance(grammar, Grammar)
    assert grammar.files == (str(first), str(second))
    assert grammar.intents["paint"].slots == {"color": ListSlot("color")}


def test_duplicate_intent_across_files_names_both(tmp_path: Path) -> None:
    first = write(tmp_path, '[intents.x]\nsay = "hello"\n', "a.toml")
    second = write(tmp_path, '# another\n\n[intents.x]\nsay = "hi"\n', "b.toml")
    with pytest.raises(GrammarError) as caught:
        load_grammar([first, second])
    error = caught.value
    assert (error.file, error.line, error.column) == (str(second), 3, 1)
    assert f"already defined at {first}:1:1" in error.message


def test_toml_syntax_error_position() -> None:
    error = error_of('[intents.x]\nsay = "hello"\nrun = [\n"a",\n"b"\nbroken\n')
    assert (error.file, error.line) == ("g.toml", 6)
    assert error.column is not None
    assert error.message.startswith("TOML syntax")
    assert str(error).startswith("g.toml:6:")


def test_non_utf8_file_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'[intents.x]\nsay = "caf\xe9"\n')
    with pytest.raises(GrammarError) as caught:
        load_grammar(path)
    assert (caught.value.line, caught.value.column) == (2, 11)
    assert "UTF-8" in caught.value.message


def test_missing_file_is_a_grammar_error(tmp_path: Path) -> None:
    with pytest.raises(GrammarError, match="cannot read"):
        load_grammar(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ('[intents.x]\nsay = "open {thing}"\n', 2, 13, "unknown slot {thing}"),
        ('[intents.x]\nsay = "open <thing>"\n', 2, 13, "unknown rule <thing>"),
        ('[intents.x]\nsay = "volume {n}"\nslots = { n = "100..0" }\n', 3, 16, "empty range"),
        ('[intents.x]\nsay = "volume {n}"\nslots = { n = "1..x" }\n', 3, 16, "bad type"),
        (
            '[intents.x]\nsay = "volume {n}"\nslots = { n = "nolist" }\n',
            3,
            16,
            "unknown list nolist",
        ),
        ('[intents.x]\nsay = "hi"\nsya = "typo"\n', 3, 1, "unknown key 'sya'"),
        ('[intent.x]\nsay = "hi"\n', 1, 1, "unknown table [intent]"),
        ('[intents.x]\nrun = ["ls"]\n', 1, 1, "no say"),
        ('[intents.x]\nsay = "hi"\nrun = "ls -l"\n', 3, 1, "not a string"),
        ('[intents.x]\nsay = "hi"\nrun = ["echo", "{who}"]\n', 3, 17, "uses {who}"),
        (
            '[intents.x]\nsay = "hi {t}"\nslots = { t = "*" }\nrun = ["{t}"]\n',
            4,
            9,
            "choose the program",
        ),
        ('[intents.x]\nsay = "hi"\nrun = ["echo", "{"]\n', 3, 17, "lone '{'"),
        ('[intents.x]\nsay = "a {n} {n}"\nslots = { n = "1..3" }\n', 2, 8, "used twice"),
        ('[intents.x]\nsay = "[a] <r>"\n[rules]\nr = "[b]"\n', 2, 8, "can match silence"),
        ('[rules]\na = "x <b>"\nb = "y <a>"\n', 2, 6, "<a> -> <b> -> <a>"),
        ('[rules]\na = "x <c>"\n', 2, 8, "unknown rule <c>"),
        ('[grammar]\nwake = "hey {name}"\n', 2, 9, "may not use"),
        ("[grammar]\nwake_required = true\n", 2, 1, "without a wake phrase"),
        ('[lists.x]\n"a" = "1"\n"A" = "2"\n', 3, 1, "sounds like"),
        ('[lists.x]\n"..." = "1"\n', 2, 1, "nothing to say"),
        ('[lists.x]\n"a" = [1]\n', 2, 1, "must be a string"),
        ("[lists]\nx = {}\n", 2, 1, "is empty"),
        ('[intents."bad name"]\nsay = "hi"\n', 1, 1, "bad intent name"),
        ('[intents.x]\nsay = "hi"\ncontext = "a b"\n', 3, 1, "bad context"),
        ('[intents.x]\nsay = "hi"\nkeys = ""\n', 3, 1, "keys must name"),
        ("[intents.x]\nsay = []\n", 2, 1, "non-empty list"),
        (
            '[intents.x]\nsay = "v [{n}]"\nslots = { n = "1..5" }\ndefaults = { n = 9 }\n',
            1,
            1,
            "not an integer within 1..5",
        ),
        ('[intents.x]\nsay = "hi"\nactions = [{ run = ["a"], keys = "b" }]\n', 3, 1, "one key"),
    ],
)
def test_validation_errors_point_at_the_source(
    text: str, line: int, column: int, message: str
) -> None:
    error = error_of(text)
    assert (error.file, error.line, error.column) == ("g.toml", line, column), error
    assert message in error.message


def test_wake_phrases_of_two_files_must_agree() -> None:
    from moonshine_live.grammar import load_sources

    with pytest.raises(GrammarError, match="wake phrase differs"):
        load_sources(
            [
                ("a.toml", '[grammar]\nwake = "computer"\n'),
                ("b.toml", '[grammar]\nwake = "jarvis"\n'),
            ]
        )


# --- property tests ----------------------------------------------------------------------------

PIECES = [
    "[intents.x]\n", "[lists.app]\n", "[rules]\n", "[grammar]\n", 'say = "', '"\n', "slots = { ",
    " }\n", 'n = "0..10"', 'app = "*"', "{app}", "{n}", "<r>", "r = ", "(", ")", "[", "]", "|",
    "open", " ", "\n", '"firefox" = "ff"\n', 'run = ["echo", "{n}"]\n', "=", ",", "'", "\\",
    'wake = "hey"\n', "context = ", "mode = ", '"*"', "[[", "]]", "#", "..", "\t", "é", "\x00",
]  # fmt: skip
BASE = """\
[grammar]
wake = "[hey] computer"

[lists.app]
"firefox" = "firefox"
"google chrome" = "chrome"

[rules]
polite = "[please]"

[intents.open_app]
say = ["(open|launch) {app} <polite>", "start {app}"]
spawn = ["{app}"]

[intents.volume]
say = "set [the] volume to {level} [percent]"
slots = { level = "0..100" }
defaults = { level = 50 }
run = ["pactl", "set-sink-volume", "@DEFAULT_SINK@", "{level}%"]
"""


def assert_grammar_or_positioned_error(text: str) -> None:
    try:
        grammar = loads_grammar(text, "fuzz.toml")
    except GrammarError as error:
        assert error.file == "fuzz.toml"
        assert isinstance(error.line, int) and error.line >= 1, error
        assert isinstance(error.column, int) and error.column >= 1, error
        return
    matcher = Matcher(grammar)  # every grammar that loads also compiles and matches
    for text_said in ("open firefox", "set the volume to 20", "hey computer start chrome", ""):
        matcher.match(text_said)


@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_grammar_text_loads_or_fails_with_a_position(text: str) -> None:
    assert_grammar_or_positioned_error(text)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = BASE
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(PIECES) | st.text(max_size=3))
        if kind == "insert":
            text = text[:at] + piece + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    return text


@given(mutated())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_grammar_loads_or_fails_with_a_position(text: str) -> None:
    assert_grammar_or_positioned_error(text)


def test_many_random_mutations_quickly() -> None:
    """A seeded sweep of single-character edits of a valid grammar, beyond hypothesis."""
    rng = random.Random(1234)
    alphabet = "[](){}<>|\"'=.,*#\n \\abc0"
    for _ in range(1500):
        at = rng.randrange(len(BASE))
        text = BASE[:at] + rng.choice(alphabet) + BASE[at + rng.randrange(2) :]
        assert_grammar_or_positioned_error(text)


# --- checker -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_grammars_check_clean(path: Path) -> None:
    report = check_grammar(path)
    assert report.ok, report.render()
    assert report.warnings == (), report.render()
    assert set(report.examples) == set(report.grammar.intents)
    assert all(report.examples.values())


def test_shipped_grammars_check_clean_together() -> None:
    report = check_grammar(SHIPPED)
    assert report.ok and report.warnings == (), report.render()


def test_check_reports_overlap_shadowing_and_unused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[lists.app]
firefox = "firefox"

[lists.unused]
x = 1

[rules]
lonely = "nobody uses me"

[intents.open_app]
say = "open {app}"
spawn = ["{app}"]

[intents.open_firefox]
say = "open firefox"
spawn = ["firefox"]

[intents.volume]
say = "volume [{n}]"
slots = { n = "0..10" }
run = ["echo", "{n}"]

[intents.wake]
say = "wake up"
mode = "dormant"
""",
    )
    report = check_grammar(path)
    assert report.ok
    kinds = [w.kind for w in report.warnings]
    assert kinds.count("unused-rule") == 1 and kinds.count("unused-list") == 1
    assert "empty-slot" in kinds and "mode" in kinds
    shadowed = [w for w in report.warnings if w.kind == "shadowed"]
    assert len(shadowed) == 1
    assert "'open_app' is shadowed by 'open_firefox'" in shadowed[0].message
    assert str(shadowed[0]).startswith(f"{path}:11:1: warning:")
    text = report.render()
    assert 'open_app: "open firefox"' in text
    assert "0 error(s), 5 warning(s)" in text


def test_check_collects_every_error(tmp_path: Path) -> None:
    bad = write(tmp_path, '[intents.a]\nsay = "x {nope}"\n\n[intents.b]\nsay = "(y"\n', "bad.toml")
    broken = write(tmp_path, "[intents.c\n", "broken.toml")
    report = check_grammar([bad, broken])
    assert not report.ok
    where = [(e.file, e.line) for e in report.errors]
    assert (str(bad), 2) in where and (str(bad), 5) in where and (str(broken), 1) in where
    assert report.grammar is None


def test_examples_cover_sentences() -> None:
    grammar = loads_grammar(ISSUE_EXAMPLE)
    found = examples(grammar, "set_volume", 4)
    assert found[0] == "set the volume to 0 percent"
    assert any(text.startswith("volume") for text in found)
    assert len(found) == len(set(found)) == 4
