"""Sentence templates: syntax characters, chunker and parser to a small AST.

A template such as ``"(open|launch) [the] {app} [please]"`` is cut into chunks (words, brackets,
``|``, ``{slot}``, ``<rule>``), parsed by recursive descent into frozen dataclasses, and its
literal words are normalised exactly like transcripts (see `grammar.normalize`), so the
matcher compares tokens with tokens. Errors are `GrammarError`s whose column points into the
template (offset by where the template sits in its file).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum, auto

from moonshine_live.errors import GrammarError
from moonshine_live.grammar.normalize import tokenize

_LOGGER = logging.getLogger(__name__)

GROUP_START, GROUP_END = "(", ")"
OPT_START, OPT_END = "[", "]"
SLOT_START, SLOT_END = "{", "}"
RULE_START, RULE_END = "<", ">"
ALT_SEP = "|"
SYNTAX_CHARS = frozenset(GROUP_START + GROUP_END + OPT_START + OPT_END + SLOT_START + SLOT_END)
SYNTAX_CHARS |= frozenset(RULE_START + RULE_END + ALT_SEP)

RANGE_SEP = ".."
"""Slot type "A..B": an integer from A to B inclusive, e.g. "0..100"."""
WILDCARD = "*"
"""Slot type "*": free text, one word or more."""

NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
NAME_RE = re.compile(NAME_PATTERN)
"""Names of slots, lists and rules: they appear inside templates, so identifiers only."""

MAX_DEPTH = 32
"""Deepest bracket nesting accepted; deeper templates are an error, not a RecursionError."""
MAX_GLUED = 256
"""Most spellings one glued word such as "(re|un)do[ne]" may expand to."""


@dataclass(frozen=True)
class Position:
    """Where something is written: file, 1-based line and column."""

    file: str
    line: int
    column: int = 1

    def error(self, message: str, offset: int = 0) -> GrammarError:
        """A GrammarError here, `offset` characters to the right (columns inside a string)."""
        return GrammarError(message, self.file, self.line, self.column + offset)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Word:
    """One normalised token that must be said."""

    text: str


@dataclass(frozen=True)
class Sequence:
    """Items said one after the other."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alternative:
    """Exactly one of the options: ``(a|b c)``."""

    options: tuple[Node, ...]


@dataclass(frozen=True)
class Optional:
    """The item, or nothing: ``[the]``."""

    item: Node


@dataclass(frozen=True)
class SlotRef:
    """``{name}``: a value from a list, a number range or free text, per the intent's slots."""

    name: str
    column: int = field(default=0, compare=False)
    """1-based column of the ``{`` in the template (for error messages)."""


@dataclass(frozen=True)
class RuleRef:
    """``<name>``: the body of a rule from the ``[rules]`` table."""

    name: str
    column: int = field(default=0, compare=False)


Node = Word | Sequence | Alternative | Optional | SlotRef | RuleRef


class ChunkType(Enum):
    WORD = auto()
    GROUP_START = auto()
    GROUP_END = auto()
    OPT_START = auto()
    OPT_END = auto()
    ALT = auto()
    SLOT = auto()
    RULE = auto()
    END = auto()


_SINGLE = {
    GROUP_START: ChunkType.GROUP_START,
    GROUP_END: ChunkType.GROUP_END,
    OPT_START: ChunkType.OPT_START,
    OPT_END: ChunkType.OPT_END,
    ALT_SEP: ChunkType.ALT,
}
_REFS = {SLOT_START: (ChunkType.SLOT, SLOT_END), RULE_START: (ChunkType.RULE, RULE_END)}
_CLOSERS = {ChunkType.GROUP_END: GROUP_END, ChunkType.OPT_END: OPT_END}


@dataclass(frozen=True)
class Chunk:
    """A piece of template text; `start`/`end` are 0-based offsets into the template."""

    kind: ChunkType
    text: str
    start: int
    end: int


def chunk_template(template: str, where: Position) -> list[Chunk]:
    """Cut a template into chunks, ending with an END chunk."""
    chunks: list[Chunk] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char.isspace():
            i += 1
        elif char in _SINGLE:
            chunks.append(Chunk(_SINGLE[char], char, i, i + 1))
            i += 1
        elif char in _REFS:
            chunks.append(_reference_chunk(template, i, where))
            i = chunks[-1].end
        elif char in (SLOT_END, RULE_END):
            raise where.error(f"unexpected '{char}' without an opening one", i)
        else:
            end = i
            while end < len(template) and not (
                template[end].isspace() or template[end] in SYNTAX_CHARS
            ):
                end += 1
            chunks.append(Chunk(ChunkType.WORD, template[i:end], i, end))
            i = end
    chunks.append(Chunk(ChunkType.END, "", len(template), len(template)))
    return chunks


def _reference_chunk(template: str, start: int, where: Position) -> Chunk:
    kind, closer = _REFS[template[start]]
    end = template.find(closer, start + 1)
    what = "slot" if kind is ChunkType.SLOT else "rule"
    if end < 0:
        raise where.error(
            f"unclosed '{template[start]}': a {what} needs a closing '{closer}'", start
        )
    name = template[start + 1 : end].strip()
    if not NAME_RE.fullmatch(name):
        raise where.error(
            f"bad {what} name {name!r}: use letters, digits and _ (not starting with a digit)",
            start,
        )
    return Chunk(kind, name, start, end + 1)


def parse_template(template: str, where: Position, allow_silence: bool = False) -> Sequence:
    """Parse one sentence template into a Sequence, or raise GrammarError at its column.

    `where` is the position of the template's first character in its file. Rules may be all
    optional (`allow_silence`); sentences may not.
    """
    parser = _Parser(chunk_template(template, where), where)
    root = parser.alternatives(0, opener=None)
    end = parser.peek()
    if end.kind is not ChunkType.END:
        raise where.error(f"unexpected '{end.text}' without an opening one", end.start)
    if root is None:
        raise where.error("template has no words to say")
    if _min_words(root) == 0 and not allow_silence:
        raise where.error("template can match silence: everything in it is optional")
    return root if isinstance(root, Sequence) else Sequence((root,))


class _Parser:
    """Recursive descent over chunks; one method per grammar production."""

    def __init__(self, chunks: list[Chunk], where: Position) -> None:
        self.chunks = chunks
        self.index = 0
        self.where = where

    def peek(self) -> Chunk:
        return self.chunks[self.index]

    def take(self) -> Chunk:
        chunk = self.chunks[self.index]
        self.index += 1
        return chunk

    def alternatives(self, depth: int, opener: Chunk | None) -> Node | None:
        """options ('|' options)* up to a closer or the end; None when there is nothing."""
        if depth > MAX_DEPTH:
            assert opener is not None
            raise self.where.error(f"brackets nested deeper than {MAX_DEPTH}", opener.start)
        options = [self.sequence(depth)]
        while self.peek().kind is ChunkType.ALT:
            bar = self.take()
            options.append(self.sequence(depth))
            if options[-2] is None or options[-1] is None:
                raise self.where.error(
                    "empty alternative next to '|': use [...] to make words optional", bar.start
                )
        if len(options) == 1:
            return options[0]
        return Alternative(tuple(o for o in options if o is not None))

    def sequence(self, depth: int) -> Node | None:
        """Items up to '|', a closer or the end, glued words merged, literal words normalised."""
        items: list[tuple[Node | _RawWord, Chunk, Chunk]] = []  # node, first and last chunk
        while self.peek().kind not in (ChunkType.ALT, ChunkType.END, *_CLOSERS):
            first = self.peek()
            node = self.item(depth)
            items.append((node, first, self.chunks[self.index - 1]))
        merged = _merge_glued(items, self.where)
        return _simplify_sequence(_normalize_words(merged))

    def item(self, depth: int) -> Node | _RawWord:
        chunk = self.take()
        if chunk.kind is ChunkType.WORD:
            return _RawWord(chunk.text, chunk.start)
        if chunk.kind is ChunkType.SLOT:
            return SlotRef(chunk.text, chunk.start + 1)
        if chunk.kind is ChunkType.RULE:
            return RuleRef(chunk.text, chunk.start + 1)
        closer = GROUP_END if chunk.kind is ChunkType.GROUP_START else OPT_END
        inner = self.alternatives(depth + 1, opener=chunk)
        end = self.take()
        if end.kind is ChunkType.END:
            raise self.where.error(f"unclosed '{chunk.text}': expected '{closer}'", chunk.start)
        if end.text != closer:
            raise self.where.error(
                f"'{chunk.text}' at column {self.where.column + chunk.start} is closed by "
                f"'{end.text}': expected '{closer}'",
                end.start,
            )
        what = "group ()" if closer == GROUP_END else "optional []"
        if inner is None:
            raise self.where.error(f"empty {what}: nothing to say inside", chunk.start)
        if closer == GROUP_END:
            return inner
        if _min_words(inner) == 0:
            raise self.where.error("optional part is already optional inside", chunk.start)
        return Optional(inner)


@dataclass(frozen=True)
class _RawWord:
    """A word as written, before normalisation; never leaves the parser."""

    text: str
    start: int


def _merge_glued(
    items: list[tuple[Node | _RawWord, Chunk, Chunk]], where: Position
) -> list[Node | _RawWord]:
    """Join items written without spaces between them ("light[s]", "(re|un)do") into one word."""
    merged: list[Node | _RawWord] = []
    run: list[tuple[Node | _RawWord, Chunk, Chunk]] = []
    for entry in [*items, None]:
        if entry is not None and run and run[-1][2].end == entry[1].start:
            run.append(entry)
            continue
        if len(run) == 1:
            merged.append(run[0][0])
        elif run:
            merged.append(_glue(run, where))
        run = [entry] if entry is not None else []
    return merged


def _glue(run: list[tuple[Node | _RawWord, Chunk, Chunk]], where: Position) -> Node:
    spellings: list[tuple[str, ...]] = []
    for node, first, _ in run:
        spelled = _spellings(node)
        if spelled is None:
            raise where.error(
                "only words and word choices can be written without spaces between them; "
                "put spaces around slots, rules and multi-word groups",
                first.start,
            )
        spellings.append(spelled)
    combined = list(dict.fromkeys("".join(parts) for parts in itertools.product(*spellings)))
    if len(combined) > MAX_GLUED:
        raise where.error(f"glued word has more than {MAX_GLUED} spellings", run[0][1].start)
    start = run[0][1].start
    words = [_RawWord(text, start) for text in combined if text]
    if not words:
        raise where.error("glued word can be empty: nothing to say", start)
    options = _normalize_alternative(words, where)
    node = options[0] if len(options) == 1 else Alternative(tuple(options))
    return Optional(node) if "" in combined else node


def _spellings(node: Node | _RawWord) -> tuple[str, ...] | None:
    """Every way a word-only node can be written, or None when it holds more than a word."""
    if isinstance(node, _RawWord | Word):
        return (node.text,)
    if isinstance(node, Optional):
        inner = _spellings(node.item)
        return None if inner is None else ("", *inner)
    if isinstance(node, Alternative):
        parts = [_spellings(option) for option in node.options]
        if any(p is None for p in parts):
            return None
        return tuple(s for p in parts if p is not None for s in p)
    return None


def _normalize_words(items: list[Node | _RawWord]) -> list[Node]:
    """Replace each run of raw words with normalised Word tokens (numbers merge across words)."""
    out: list[Node] = []
    run: list[_RawWord] = []
    for item in [*items, None]:
        if isinstance(item, _RawWord):
            run.append(item)
            continue
        if run:
            out.extend(Word(t) for t in tokenize(" ".join(w.text for w in run)).words)
            run = []
        if item is not None:
            out.append(item)
    return out


def _normalize_alternative(words: list[_RawWord], where: Position) -> list[Node]:
    options: list[Node] = []
    for word in words:
        node = _simplify_sequence(_normalize_words([word]))
        if node is None:
            raise where.error(
                f"{word.text!r} has nothing to say once punctuation is dropped", word.start
            )
        if node not in options:
            options.append(node)
    return options


def _simplify_sequence(items: list[Node]) -> Node | None:
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Sequence) else (item,))
    if not flat:
        return None
    return flat[0] if len(flat) == 1 else Sequence(tuple(flat))


def _min_words(node: Node, rule_min: dict[str, int] | None = None) -> int:
    """Fewest tokens the node can match; a rule counts as `rule_min[name]` (default 1)."""
    if isinstance(node, Sequence):
        return sum(_min_words(item, rule_min) for item in node.items)
    if isinstance(node, Alternative):
        return min(_min_words(option, rule_min) for option in node.options)
    if isinstance(node, Optional):
        return 0
    if isinstance(node, RuleRef) and rule_min is not None:
        return rule_min.get(node.name, 1)
    return 1


def min_words(node: Node, rule_min: dict[str, int] | None = None) -> int:
    """Fewest tokens `node` can match, given the fewest each rule can match."""
    return _min_words(node, rule_min)


def walk(node: Node) -> Iterator[Node]:
    """The node and every node below it, depth first."""
    yield node
    if isinstance(node, Sequence):
        for item in node.items:
            yield from walk(item)
    elif isinstance(node, Alternative):
        for option in node.options:
            yield from walk(option)
    elif isinstance(node, Optional):
        yield from walk(node.item)


def slot_refs(node: Node) -> list[SlotRef]:
    return [n for n in walk(node) if isinstance(n, SlotRef)]


def rule_refs(node: Node) -> list[RuleRef]:
    return [n for n in walk(node) if isinstance(n, RuleRef)]


def render(node: Node) -> str:
    """Template text for a node; parsing it back gives an equal node."""
    if isinstance(node, Word):
        return node.text
    if isinstance(node, Sequence):
        return " ".join(render(item) for item in node.items)
    if isinstance(node, Alternative):
        return GROUP_START + ALT_SEP.join(render(o) for o in node.options) + GROUP_END
    if isinstance(node, Optional):
        text = render(node.item)
        if isinstance(node.item, Alternative):
            text = text[1:-1]  # "[a|b]" rather than "[(a|b)]"
        return OPT_START + text + OPT_END
    if isinstance(node, SlotRef):
        return SLOT_START + node.name + SLOT_END
    return RULE_START + node.name + RULE_END
