"""The active grammar as a token automaton over Moonshine's BPE vocabulary.

The matcher's sentence automata consume normalised words ("12", "ounce"); Moonshine writes
surface text ("▁Twelve", "-", "ounce", ","). This module joins the two in three layers:

1. A word automaton (`SurfaceWords`): every active sentence's edges expanded into the words a
   transcript may show for them: numbers as digits or words ("12", "twelve"; "forty two"),
   "percent" as "%", a list entry of several words also written as one ("firefox"), free text
   as any word. One NFA for all active sentences (and the wake phrase), so the decoder searches
   them all at once.
2. A character walk (`CharState`, `TokenAutomaton.step_char`): words written as words are
   (`spelling.py`: lower case, capitalised or capitals, ASCII, an apostrophe only in an English
   contraction, which the normaliser joins, like "what's" -> "whats"), words end
   at a space, a hyphen or a comma (one separator between words: no ",,", no "- "), and end
   punctuation (".", "?", "!") only where a sentence may end, once.
3. Tokens: a token is allowed from a state if its characters walk without dying. The allowed
   set of a state is found once, by walking the vocabulary's character trie from it (only
   live branches are visited), and kept: a decode step then costs a dictionary lookup. Every
   tokenization of an allowed text is accepted, not only the tokenizer's own.

States are interned as small ints; `TokenAutomaton.allowed(state)` gives (token ids, next states).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .compile import LIST, NUMBER, TEXT, WORD, Automaton, CompiledGrammar, CompiledSentence
from .normalize import number_to_words
from .spelling import CONTRACTIONS, END_PUNCTUATION, LOWER, fold, next_shape, reading

ANY = "\x00*"
"""Edge label of free text: any one word."""
MAX_NUMBER_RANGE = 2_000
"""Ranges with more integers than this accept any digits (their words are not enumerated)."""
_SYMBOL_FORMS = {"percent": "%", "and": "&", "plus": "+"}
"""Words the normaliser also reads from a symbol: "40%" is "40 percent"."""

# separator phases between words
_IN_WORD, _SPACE, _COMMA, _COMMA_SPACE, _HYPHEN, _ENDED, _START, _APOSTROPHE = range(8)
_WORD_PHASES = (_IN_WORD, _APOSTROPHE)  # inside a word (after its apostrophe, the second)


class CharState(NamedTuple):
    """Where a character walk is: the word automaton's states at the last word boundary, the
    word being written since (lower case, "" between words; `ANY` once it can only be free
    text), the separator phase, and the word's shape: its case so far and the letters since its
    apostrophe (None: none; "*": any may follow).

    The shape keeps the search to the ways a word is written: lower case, capitalised or all
    capitals, plain ASCII letters, an apostrophe only before a contraction's ending. Without it
    a beam fills with spellings of one word ("T'w", "T'u", "T'O", "T'wêLvê") that the
    normaliser would read alike, and the probability of the sentence is spread over them.
    Free text (`ANY`) is written as the model likes."""

    states: frozenset[int]
    partial: str
    phase: int
    case: int = LOWER
    after_apostrophe: str | None = None


@dataclass
class SurfaceWords:
    """NFA over surface words: `edges[state][word]` -> target states."""

    edges: list[dict[str, set[int]]] = field(default_factory=list)
    accepting: set[int] = field(default_factory=set)
    start: set[int] = field(default_factory=set)
    intent: list[str] = field(default_factory=list)
    """The intent of the sentence each state belongs to ("" for the wake phrase)."""
    slot_ahead: list[bool] = field(default_factory=list)
    """Whether words after this state may still fill a slot (change the command's values)."""

    def new_state(self, intent: str = "", slot_ahead: bool = False) -> int:
        self.edges.append({})
        self.intent.append(intent)
        self.slot_ahead.append(slot_ahead)
        return len(self.edges) - 1

    def add(self, source: int, word: str, target: int) -> None:
        self.edges[source].setdefault(word, set()).add(target)

    def add_path(self, source: int, words: Sequence[str], target: int) -> None:
        """`words` in a row from `source` to `target`, sharing states with paths already there."""
        state = source
        for word in words[:-1]:
            existing = [t for t in self.edges[state].get(word, ()) if t >= self._path_floor]
            if existing:
                state = existing[0]
            else:
                step = self.new_state(self.intent[source], self._path_slot)
                self.add(state, word, step)
                state = step
        self.add(state, words[-1], target)

    _path_floor: int = 0
    """States made by `add_path` for the current edge start here (paths of one edge share)."""
    _path_slot: bool = False
    """Whether the states `add_path` makes now are inside a slot or before one."""


def number_forms(value: int) -> list[tuple[str, ...]]:
    """How a transcript may write an integer: digits, or words ("one hundred and five")."""
    words = tuple(number_to_words(value).replace("-", " ").split())
    forms = [(str(value),), words]
    if "hundred" in words and words[-1] != "hundred":
        at = words.index("hundred") + 1
        forms.append((*words[:at], "and", *words[at:]))
    if words[:1] == ("one",) and len(words) > 1 and words[1] in ("hundred", "thousand"):
        forms.append(("a", *words[1:]))
    return forms


def word_forms(word: str) -> list[tuple[str, ...]]:
    """Surface word sequences of one normalised token."""
    if word.isdigit():
        return number_forms(int(word))
    forms = [(word,)]
    if word in _SYMBOL_FORMS:
        forms.append((_SYMBOL_FORMS[word],))
    return forms


def _sequences(tokens: Iterable[str]) -> list[tuple[str, ...]]:
    """Every surface form of a token sequence (the product of each token's forms)."""
    result: list[tuple[str, ...]] = [()]
    for token in tokens:
        result = [done + form for done in result for form in word_forms(token)]
    return result


def surface_words(
    sentences: Iterable[CompiledSentence], wake: Automaton | None = None, required: bool = False
) -> SurfaceWords:
    """One word NFA accepting every active sentence in every surface form, after the wake
    phrase (`required`) or with or without it."""
    nfa = SurfaceWords()
    for sentence in sentences:
        nfa.start.add(_add_automaton(nfa, sentence.automaton, sentence.intent.name))
    if wake is None:
        return nfa
    starts = set(nfa.start)
    wake_start = _add_automaton(nfa, wake, "")
    ends = [wake_start + a for a in wake.accepting]
    for end in ends:  # after the wake phrase, any sentence
        for start in starts:
            for word, targets in nfa.edges[start].items():
                nfa.edges[end].setdefault(word, set()).update(targets)
    nfa.start = {wake_start} if required else starts | {wake_start}
    return nfa


def _add_automaton(nfa: SurfaceWords, automaton: Automaton, intent: str) -> int:
    """Copy a sentence automaton's states into the NFA (the wake phrase: `intent` ""); returns
    where its state 0 landed."""
    ahead = _slots_ahead(automaton)
    offset = len(nfa.edges)
    for state in range(len(automaton.edges)):
        nfa.new_state(intent, ahead[state])
    if intent:
        nfa.accepting.update(offset + a for a in automaton.accepting)
    for state, edges in enumerate(automaton.edges):
        for edge in edges:
            nfa._path_slot = edge.kind in _SLOT_KINDS or ahead[edge.target]
            _add_edge(nfa, offset + state, edge.kind, edge.arg, offset + edge.target)
    return offset


_SLOT_KINDS = (LIST, NUMBER, TEXT)


def _slots_ahead(automaton: Automaton) -> list[bool]:
    """Per state, whether a slot edge lies on some path from it (edges only go forward)."""
    ahead = [False] * len(automaton.edges)
    for state in reversed(range(len(automaton.edges))):
        ahead[state] = any(
            edge.kind in _SLOT_KINDS or ahead[edge.target] for edge in automaton.edges[state]
        )
    return ahead


def _add_edge(nfa: SurfaceWords, source: int, kind: int, arg: object, target: int) -> None:
    nfa._path_floor = len(nfa.edges)
    if kind == WORD:
        for form in word_forms(str(arg)):
            nfa.add_path(source, form, target)
    elif kind == LIST:
        for tokens, _ in arg.entries:  # type: ignore[attr-defined]
            for form in _sequences(tokens):
                nfa.add_path(source, form, target)
            if len(tokens) > 1 and all(t.isalpha() for t in tokens):
                nfa.add_path(source, ("".join(tokens),), target)  # "fire fox" as "firefox"
    elif kind == NUMBER:
        low, high = arg  # type: ignore[misc]
        if high - low <= MAX_NUMBER_RANGE:
            for value in range(low, high + 1):
                for form in number_forms(value) if value >= 0 else [(str(value),)]:
                    nfa.add_path(source, form, target)
        else:
            nfa.add(source, "\x00#", target)
    elif kind == TEXT:  # one word or more: a loop state that may leave at every word
        loop = nfa.new_state(nfa.intent[source], True)
        for state in (source, loop):
            nfa.add(state, ANY, loop)
            nfa.add(state, ANY, target)


def _shaped(state: CharState, char: str, folded: str) -> CharState | None:
    """`state` with the shape of its word after `char` (`spelling.next_shape`), or None when no
    word is written so. The letter itself is added by the caller."""
    first = state.phase not in _WORD_PHASES
    shape = next_shape(state.case, state.after_apostrophe, state.partial, char, folded, first)
    return None if shape is None else state._replace(case=shape[0], after_apostrophe=shape[1])


class TokenAutomaton:
    """The grammar's sentences over token ids: a start state, allowed tokens per state, ends.

    Build one per grammar load and engine state (contexts, mode); `allowed` fills its cache as
    decoding visits states, so a second utterance of the same command costs lookups only.
    """

    def __init__(
        self,
        compiled: CompiledGrammar,
        pieces: Sequence[str],
        eos_id: int,
        active: Sequence[bool] | None = None,
    ) -> None:
        """`pieces`: the vocabulary's surface strings by id ("▁" already a space; "" for ids
        that are never text: control and byte tokens)."""
        chosen = [s for s in compiled.sentences if active is None or active[s.order]]
        wake = compiled.grammar.wake
        self.nfa = surface_words(chosen, compiled.wake, bool(wake and wake.required))
        self.eos_id = eos_id
        self._trie = _vocab_trie(tuple(pieces))
        self._readings = _readings(tuple(pieces))
        self._ids: dict[CharState, int] = {}
        self._states: list[CharState] = []
        self._chars: dict[tuple[int, str], int | None] = {}
        self._allowed: dict[int, tuple[torch.Tensor, list[int]]] = {}
        self._prefixes: dict[frozenset[int], frozenset[str]] = {}
        self._words: dict[frozenset[int], dict[str, frozenset[int]]] = {}
        self._lock = threading.RLock()  # the caches grow as states are visited, from any thread
        self.start = self._intern(CharState(frozenset(self.nfa.start), "", _START))

    @property
    def empty(self) -> bool:
        """No sentence is active: nothing can be decoded."""
        return not self.nfa.start

    def _intern(self, state: CharState) -> int:
        found = self._ids.get(state)
        if found is None:
            found = self._ids[state] = len(self._states)
            self._states.append(state)
        return found

    def state(self, state_id: int) -> CharState:
        return self._states[state_id]

    # -- the word automaton, per set of states -------------------------------------------------

    def _words_from(self, states: frozenset[int]) -> dict[str, frozenset[int]]:
        found = self._words.get(states)
        if found is None:
            merged: dict[str, set[int]] = {}
            for state in states:
                for word, targets in self.nfa.edges[state].items():
                    merged.setdefault(word, set()).update(targets)
            found = self._words[states] = {w: frozenset(t) for w, t in merged.items()}
        return found

    def _prefixes_of(self, states: frozenset[int]) -> frozenset[str]:
        found = self._prefixes.get(states)
        if found is None:
            words = self._words_from(states)
            found = frozenset(w[:i] for w in words if w[0] != "\x00" for i in range(len(w) + 1))
            self._prefixes[states] = found
        return found

    def _complete(self, state: CharState) -> frozenset[int]:
        """The word automaton's states after the word being written ends here (empty: dead)."""
        if state.phase not in _WORD_PHASES:
            return state.states
        words = self._words_from(state.states)
        targets: set[int] = set()
        if state.partial != ANY:
            targets.update(words.get(state.partial, ()))
            if state.partial.isdigit():
                targets.update(words.get("\x00#", ()))
        targets.update(words.get(ANY, ()))
        return frozenset(targets)

    def accepts_end(self, state_id: int) -> bool:
        """May the text end here (end-of-text allowed)?"""
        state = self._states[state_id]
        if state.phase not in (*_WORD_PHASES, _ENDED) or state.after_apostrophe == "":
            return False
        return bool(self._complete(state) & self.nfa.accepting)

    def settled(self, state_id: int) -> bool:
        """Whether the text so far is a whole command that no further words can change: it may
        end here, and every way on stays in the same intent without filling a slot (an optional
        "please" may follow; "firefox" of "firefox settings" may not). Early commit is safe then.
        """
        if not self.accepts_end(state_id):
            return False
        state = self._states[state_id]
        reached = self._complete(state) if state.phase in _WORD_PHASES else state.states
        ending = {self.nfa.intent[s] for s in reached & self.nfa.accepting}
        if len(ending) != 1:
            return False
        nfa = self.nfa
        going_on = [s for s in reached if nfa.edges[s]]
        return all(nfa.intent[s] in ending and not nfa.slot_ahead[s] for s in going_on)

    # -- characters ----------------------------------------------------------------------------

    def step_char(self, state_id: int, char: str) -> int | None:
        """The state after one more character, or None when no allowed text goes on so."""
        key = (state_id, char)
        if key in self._chars:
            return self._chars[key]
        with self._lock:
            found = self._step(self._states[state_id], char)
            result = None if found is None else self._intern(found)
            self._chars[key] = result
        return result

    def _step(self, state: CharState, char: str) -> CharState | None:
        phase = state.phase
        if phase == _ENDED:
            return None
        if char == " ":
            if phase in _WORD_PHASES:
                return self._boundary(state, _SPACE)
            if phase == _START:
                return CharState(state.states, "", _SPACE)
            return CharState(state.states, "", _COMMA_SPACE) if phase == _COMMA else None
        if char in ",-":
            if phase not in _WORD_PHASES:
                return None
            return self._boundary(state, _COMMA if char == "," else _HYPHEN)
        if char in END_PUNCTUATION:
            if phase not in _WORD_PHASES or state.after_apostrophe == "":
                return None
            ended = self._complete(state) & self.nfa.accepting
            return CharState(frozenset(ended), "", _ENDED) if ended else None
        if char in "'’":  # once per word ("what's", "I'd"); the word is written without it
            if phase != _IN_WORD or not state.partial:
                return None
            if state.partial != ANY and state.partial not in CONTRACTIONS:
                return None
            after = "*" if state.partial == ANY else ""
            return CharState(state.states, state.partial, _APOSTROPHE, state.case, after)
        if char in "%&+":
            if phase in _WORD_PHASES:  # "40%": the number ends, the symbol is a word of its own
                after = self._complete(state)
                if not after:
                    return None
                state = CharState(after, "", _SPACE)
            return self._letter(state, char)
        folded = fold(char)
        if len(folded) != 1 or not folded.isalnum():
            return None
        if state.partial == ANY and phase in _WORD_PHASES:
            return self._letter(state, folded)
        shaped = _shaped(state, char, folded)
        return None if shaped is None else self._letter(shaped, folded)

    def _boundary(self, state: CharState, phase: int) -> CharState | None:
        if state.after_apostrophe == "":
            return None  # an apostrophe ends no word ("cold'")
        after = self._complete(state)
        return CharState(after, "", phase) if after else None

    def _letter(self, state: CharState, char: str) -> CharState | None:
        inside = state.phase in _WORD_PHASES
        partial = state.partial if inside else ""
        phase = state.phase if inside else _IN_WORD
        words = self._words_from(state.states)
        shape = (state.case, state.after_apostrophe)  # set by `_shaped` for this letter
        if partial != ANY:
            grown = partial + char
            if grown in self._prefixes_of(state.states):
                return CharState(state.states, grown, phase, *shape)
            if char.isdigit() and grown.isdigit() and "\x00#" in words:
                return CharState(state.states, grown, phase, *shape)
        if ANY in words and char not in "%&+":
            return CharState(state.states, ANY, phase, *shape)
        return None

    # -- tokens --------------------------------------------------------------------------------

    def allowed(self, state_id: int) -> tuple[torch.Tensor, list[int]]:
        """(token ids [n] (long), the state after each); end-of-text is among them where a
        sentence may end (its next state is the same state)."""
        found = self._allowed.get(state_id)
        if found is not None:
            return found
        with self._lock:
            ids: list[int] = []
            nexts: list[int] = []
            self._walk(self._trie, state_id, ids, nexts)
            if self.accepts_end(state_id):
                ids.append(self.eos_id)
                nexts.append(state_id)
            found = self._allowed[state_id] = (torch.tensor(ids, dtype=torch.long), nexts)
        return found

    def _walk(self, node: _TrieNode, state_id: int, ids: list[int], nexts: list[int]) -> None:
        for char, child in node.children.items():
            after = self.step_char(state_id, char)
            if after is None:
                continue
            for token_id in child.ends:
                ids.append(token_id)
                nexts.append(after)
            if child.children:
                self._walk(child, after, ids, nexts)

    def reading(self, token_id: int) -> str:
        """The token as the normaliser reads it (`spelling.reading`): the search keeps one
        hypothesis per text so read, not one per spelling."""
        return self._readings[token_id]

    def advance(self, state_id: int, token_id: int) -> int | None:
        """The state after a token (None: not allowed)."""
        if token_id == self.eos_id:
            return state_id if self.accepts_end(state_id) else None
        ids, nexts = self.allowed(state_id)
        matches = (ids == token_id).nonzero()
        return nexts[int(matches[0])] if len(matches) else None

    def after(self, tokens: Iterable[int]) -> int | None:
        """The state after these tokens (None: the grammar refuses them)."""
        state: int | None = self.start
        for token in tokens:
            if state is None:
                return None
            state = self.advance(state, int(token))
        return state

    def accepts_text(self, text: str) -> bool:
        """Whether `text` (as decoded) is a whole allowed sentence: for tests and tools."""
        state: int | None = self.start
        for char in text:
            state = self.step_char(state, char)
            if state is None:
                return False
        return self.accepts_end(state)


@dataclass
class _TrieNode:
    children: dict[str, _TrieNode] = field(default_factory=dict)
    ends: list[int] = field(default_factory=list)


@functools.lru_cache(maxsize=2)
def _vocab_trie(pieces: tuple[str, ...]) -> _TrieNode:
    """The vocabulary by characters; one per tokenizer (every grammar reload shares it)."""
    root = _TrieNode()
    for token_id, text in enumerate(pieces):
        if not text:
            continue
        node = root
        for char in text:
            node = node.children.setdefault(char, _TrieNode())
        node.ends.append(token_id)
    return root


@functools.lru_cache(maxsize=2)
def _readings(pieces: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(reading(piece) for piece in pieces)


def surface_pieces(pieces: Sequence[str]) -> list[str]:
    """Vocabulary entries as text: "▁" -> " "; control and byte tokens ("<s>", "<0x0A>") -> ""."""
    texts = []
    for piece in pieces:
        if piece.startswith("<") and piece.endswith(">") and len(piece) > 2:
            texts.append("")
        else:
            texts.append(piece.replace("▁", " "))
    return texts
