"""Transcript -> command: normalise, strip the wake phrase, parse exactly, else match fuzzily.

`Matcher(grammar, config).match(text, context, mode)` returns a `CommandMatch` (intent, typed
slots, score) or a `Rejected` (never dispatched) with the reason. The matcher is stateless:
the engine owns the current contexts and mode and passes them in.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moonshine_live.errors import ConfigError
from moonshine_live.grammar.align import AlignCosts, Aligner
from moonshine_live.grammar.compile import TEXT, CompiledGrammar, compile_grammar
from moonshine_live.grammar.normalize import Tokens, tokenize
from moonshine_live.grammar.recognize import (
    Parse,
    exact_parses,
    longest_prefix,
    rank_candidates,
)
from moonshine_live.grammar.schema import DEFAULT_MODE, Grammar, SlotValue

_LOGGER = logging.getLogger(__name__)

NOTHING_SAID = "nothing was said"
"""The reason for a transcript without words (noise, a cough): not speech outside the grammar."""

REPORT_FRACTION = 0.9
"""Fuzzy scores below threshold x this are not worked out, which saves most of the time spent
on chatter; such transcripts are rejected as "nothing like a command" with no best intent."""
VIABILITY_FACTOR = 3
"""Candidates examined for viability per candidate aligned (bounds the time on chatter)."""
ACTIVE_CACHE_SIZE = 64
"""Engine states (contexts, mode) whose active-sentence flags are kept."""
DEFAULT_FUNCTION_WORDS = frozenset({
    "a", "an", "the", "to", "of", "in", "on", "at", "for", "by", "with", "from", "into", "onto",
    "and", "or", "is", "are", "be", "it", "its", "this", "that", "these", "those", "my", "your",
    "me", "i", "you", "we", "us", "our", "can", "could", "would", "will", "please",
})  # fmt: skip
"""English words that carry little meaning in a command; a fuzzy match may miss them."""
DEFAULT_FILLERS = frozenset({"uh", "um", "er", "erm", "ah", "hmm", "please", "okay", "ok", "so"})


@dataclass(frozen=True)
class MatcherConfig:
    """How forgiving matching is. Change with `dataclasses.replace`."""

    threshold: float = 0.75
    """Lowest fuzzy score (0..1) that is still a command. Score = 1 - edit cost / length, in
    words. A fuzzy match must hear every content word at least approximately anyway; 0.75
    then accepts one slightly misheard word in a short command ("open crome" 0.83, "close the
    tap" 0.78) and extra words ("please take a screenshot"), but rejects a two-word command
    with one word half wrong ("next tap" 0.67): a false command is worse than a retry."""
    fuzzy: bool = True
    """False: exact parses only."""
    max_candidates: int = 4
    """Sentences aligned fuzzily per transcript: those sharing most words with it, among those
    where every content word was heard at least approximately (bounds the time)."""
    ambiguity_margin: float = 0.05
    """Reject a fuzzy match when another intent scores within this margin of it."""
    min_word_similarity: float = 0.5
    """Character similarity (0..1, 1 - edit distance / length) at or below which two words
    count as different. Misheard content words are also expected to keep their first letter."""
    function_words: frozenset[str] = DEFAULT_FUNCTION_WORDS
    """Template words a fuzzy match may miss or mishear entirely (they weigh half). Every
    other template word must be heard at least approximately (similarity >= the floor)."""
    fillers: frozenset[str] = DEFAULT_FILLERS
    """Words that cost little when said in addition to a sentence."""
    filler_cost: float = 0.1
    """Cost of one extra filler word, in words (an extra ordinary word costs 1)."""

    def __post_init__(self) -> None:
        for name in ("threshold", "ambiguity_margin", "min_word_similarity", "filler_cost"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"MatcherConfig.{name} = {value!r}: must be within 0..1")
        if self.max_candidates < 1:
            raise ConfigError(
                f"MatcherConfig.max_candidates = {self.max_candidates!r}: must be at least 1"
            )
        object.__setattr__(self, "fillers", frozenset(self.fillers))
        object.__setattr__(self, "function_words", frozenset(self.function_words))


@dataclass(frozen=True)
class CommandMatch:
    """A transcript recognised as an intent, with typed slot values."""

    intent: str
    slots: Mapping[str, SlotValue]
    """Ints for ranges, list values as written in the grammar, free text as said."""
    text: str
    normalized: str
    score: float
    """1.0 for exact parses, else the fuzzy score (>= the threshold)."""
    exact: bool
    sentence: str = ""
    """The template that matched."""
    slot_text: Mapping[str, str] = field(default_factory=dict)
    """The words said for each slot filled from speech (defaults have none)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "slots": dict(self.slots),
            "slot_text": dict(self.slot_text),
            "score": round(self.score, 4),
            "exact": self.exact,
            "text": self.text,
            "normalized": self.normalized,
            "sentence": self.sentence,
        }


@dataclass(frozen=True)
class Rejected:
    """A transcript that is not a command (or not confidently one): reported, never dispatched."""

    text: str
    normalized: str
    best_intent: str | None
    score: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_intent": self.best_intent,
            "score": round(self.score, 4),
            "reason": self.reason,
            "text": self.text,
            "normalized": self.normalized,
        }


MatchResult = CommandMatch | Rejected


class Matcher:
    """Matches transcripts against a grammar; build a new one when the grammar changes."""

    def __init__(self, grammar: Grammar, config: MatcherConfig | None = None) -> None:
        self.grammar = grammar
        self.config = config or MatcherConfig()
        self.compiled: CompiledGrammar = compile_grammar(grammar)
        self._costs = AlignCosts(
            filler_insert=self.config.filler_cost,
            fillers=self.config.fillers,
            min_word_similarity=self.config.min_word_similarity,
            function_words=self.config.function_words,
        )
        self._active_cache: dict[tuple[frozenset[str], str], list[bool]] = {}

    def match(
        self, text: str, context: str | Iterable[str] | None = None, mode: str = DEFAULT_MODE
    ) -> MatchResult:
        """Match one transcript in the given engine state.

        `context`: the active context name(s); None means none is active, so only intents
        without a ``context`` can match. `mode`: the engine's current mode.
        """
        tokens = tokenize(text)
        if not tokens.words:
            return self._rejected(text, tokens, None, NOTHING_SAID)
        tokens, woke = self._strip_wake(tokens)
        if self.grammar.wake is not None and self.grammar.wake.required and not woke:
            return self._rejected(text, tokens, None, "no wake phrase")
        if not tokens.words:
            return self._rejected(text, tokens, None, "only the wake phrase")
        contexts = _as_contexts(context)
        active = self._active(contexts, mode)
        exact = exact_parses(self.compiled, tokens.words, range(len(active)))
        for parse in exact:
            if active[parse.compiled.order]:
                return self._command(text, tokens, parse)
        if exact:  # said exactly, but not now: never fuzzy-match it to something else
            return self._not_active(text, tokens, exact[0], contexts, mode)
        if not self.config.fuzzy:
            return self._rejected(text, tokens, None, "no exact match")
        return self._fuzzy(text, tokens, active)

    def _fuzzy(self, text: str, tokens: Tokens, active: list[bool]) -> MatchResult:
        config = self.config
        candidates = rank_candidates(
            self.compiled,
            tokens.words,
            active,
            config.min_word_similarity,
            ignore=config.function_words,
        )
        ranked = self._align(tokens, candidates)
        if not ranked:
            return self._rejected(text, tokens, None, "nothing like a command")
        best = ranked[0]
        intent = best.compiled.intent.name
        if best.problem:
            return self._rejected(text, tokens, best, best.problem)
        if best.wildcard_tokens and not best.exact_words:
            reason = "free text, but no word of the command was heard exactly"
            return self._rejected(text, tokens, best, reason)
        if best.score < config.threshold:
            reason = f"best score {best.score:.2f} is below the threshold {config.threshold:.2f}"
            return self._rejected(text, tokens, best, reason)
        for other in ranked[1:]:
            other_intent = other.compiled.intent.name
            if other_intent != intent and best.score - other.score < config.ambiguity_margin:
                reason = f"ambiguous: {intent} {best.score:.2f} vs {other_intent} {other.score:.2f}"
                return self._rejected(text, tokens, best, reason)
        return self._command(text, tokens, best)

    def _align(self, tokens: Tokens, candidates: list[int]) -> list[Parse]:
        """Fuzzy parses of the best viable candidates that could still win or tie, best first."""
        aligner = Aligner(tokens.words, self._costs)
        sentences = self.compiled.sentences
        examined = candidates[: VIABILITY_FACTOR * self.config.max_candidates]
        viable = (i for i in examined if aligner.viable(sentences[i]))
        min_score = self.config.threshold * REPORT_FRACTION
        parses: list[Parse] = []
        for sentence_id in itertools.islice(viable, self.config.max_candidates):
            parse = aligner.align(sentences[sentence_id], min_score)
            if parse is not None:
                parses.append(parse)
                # Later candidates matter only if they come within the ambiguity margin.
                min_score = max(min_score, parse.score - self.config.ambiguity_margin)
        return sorted((p for p in parses if p.score >= min_score), key=lambda p: p.rank)

    def _strip_wake(self, tokens: Tokens) -> tuple[Tokens, bool]:
        if self.compiled.wake is None:
            return tokens, False
        length = longest_prefix(self.compiled.wake, tokens.words)
        return (tokens.drop_first(length), True) if length else (tokens, False)

    def active(self, contexts: frozenset[str], mode: str) -> list[bool]:
        """For each compiled sentence, whether its intent is active in this state."""
        return self._active(contexts, mode)

    def _active(self, contexts: frozenset[str], mode: str) -> list[bool]:
        """For each compiled sentence, whether its intent is active in this state."""
        key = (contexts, mode)
        if key not in self._active_cache:
            if len(self._active_cache) > ACTIVE_CACHE_SIZE:
                self._active_cache.clear()
            sentences = self.compiled.sentences
            self._active_cache[key] = [s.intent.is_active(contexts, mode) for s in sentences]
        return self._active_cache[key]

    def _command(self, text: str, tokens: Tokens, parse: Parse) -> CommandMatch:
        intent = parse.compiled.intent
        slots: dict[str, SlotValue] = {}
        slot_text: dict[str, str] = {}
        for fill in parse.fills:
            said = tokens.original(fill.start, fill.end)  # as the transcript has it
            value = said if fill.kind == TEXT else fill.value
            assert value is not None
            slots[fill.name] = value
            slot_text[fill.name] = spoken_words(said)
        for name, value in intent.defaults.items():
            slots.setdefault(name, value)
        return CommandMatch(
            intent=intent.name,
            slots=slots,
            text=text,
            normalized=" ".join(tokens.words),
            score=parse.score,
            exact=parse.cost == 0.0,
            sentence=parse.compiled.sentence.template,
            slot_text=slot_text,
        )

    def _rejected(self, text: str, tokens: Tokens, parse: Parse | None, reason: str) -> Rejected:
        return Rejected(
            text=text,
            normalized=" ".join(tokens.words),
            best_intent=parse.compiled.intent.name if parse else None,
            score=parse.score if parse else 0.0,
            reason=reason,
        )

    def _not_active(
        self, text: str, tokens: Tokens, parse: Parse, contexts: frozenset[str], mode: str
    ) -> Rejected:
        """An intent said exactly that the current contexts or mode switch off."""
        intent = parse.compiled.intent
        needs = [f"mode {' or '.join(sorted(intent.modes))}"]
        if intent.contexts:
            needs.insert(0, f"context {' or '.join(sorted(intent.contexts))}")
        now = f"context {', '.join(sorted(contexts)) or 'none'}, mode {mode}"
        reason = f"{intent.name} is not active: it needs {' and '.join(needs)} (now {now})"
        return self._rejected(text, tokens, parse, reason)


def _as_contexts(context: str | Iterable[str] | None) -> frozenset[str]:
    if context is None:
        return frozenset()
    if isinstance(context, str):
        return frozenset((context,))
    return frozenset(context)


def spoken_words(text: str) -> str:
    """Text as words, without the transcript's punctuation between them ("fire, Fox," ->
    "fire Fox"; "40%" and "don't" stay)."""
    return " ".join(word.strip(',;:!?"()') for word in text.split()).strip(" .")
