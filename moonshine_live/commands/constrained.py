"""Commands decoded within the grammar, scored, and refused when the audio is not one of them.

The transcriber decodes each utterance twice from one encoder pass: freely (what was said) and
by a beam search within the active sentences (which command it was). The free decode is the
yardstick: when the speech is a command, the grammar's best sentence scores about what the free
text scores; when it is not, the grammar forces words the audio does not hold and its score
falls far below. `llr` is that gap per token (a log-likelihood ratio, at most about 0).

`confidence` combines that with how the grammar's own hypotheses share out: the probability of
the best command (hypotheses that give the same intent and slots are one command, whatever
their spelling or punctuation) among those found. Below `min_confidence` the result is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..asr.transcript import Transcript
from ..errors import ConfigError
from ..grammar.matcher import CommandMatch, Matcher, Rejected
from ..grammar.schema import DEFAULT_MODE

if TYPE_CHECKING:  # torch stays out of the command stage until a decode needs it
    from ..asr.constrained import BeamResult, Hypothesis
    from ..asr.transcriber import Transcriber
    from ..grammar.tokens import TokenAutomaton

DECODE_MODES = ("constrained", "free")


@dataclass(frozen=True)
class ConstrainedConfig:
    """How commands are searched for and when one is refused."""

    beam: int = 4
    """Hypotheses kept per step; 1 is the masked greedy decode."""
    min_confidence: float = 0.15
    """Refuse a command whose confidence is below this (0 refuses nothing). Chosen on the dev
    split of `benchmarks/commands.py` (0.132 there, with a false accept costing three misses;
    2026-12-07), rounded up: real voices may score lower than TTS, so refusing errs safe."""
    llr_scale: float = 1.0
    """How fast confidence falls as the grammar's best scores below the free text (per token)."""

    def __post_init__(self) -> None:
        if not 1 <= self.beam <= 16:
            raise ConfigError(f"ConstrainedConfig.beam must be in [1, 16], got {self.beam}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(
                f"ConstrainedConfig.min_confidence must be in [0, 1], got {self.min_confidence}"
            )
        if self.llr_scale <= 0:
            raise ConfigError(f"ConstrainedConfig.llr_scale must be > 0, got {self.llr_scale}")


@dataclass(frozen=True)
class Alternative:
    """A command the audio might also have been."""

    intent: str
    slots: dict[str, object]
    text: str
    confidence: float


@dataclass(frozen=True)
class Recognition:
    """One utterance: what was said freely, the command it is (or why none), and how sure."""

    free: Transcript
    text: str
    """The grammar's best sentence as decoded ("" when the grammar had no way through)."""
    match: CommandMatch | Rejected
    """The matcher's reading of `text` (or of the free text, when nothing fit)."""
    confidence: float
    margin: float
    """Confidence of the best command minus the runner-up's (the best's own when alone)."""
    llr: float
    """(grammar's best score - free score) / tokens: about 0 for a command, very negative else."""
    alternatives: tuple[Alternative, ...] = ()
    rejected: str | None = None
    """Why the command was refused (None: accepted)."""
    search_ms: float = 0.0
    steps: int = 0
    unfinished: bool = False
    """Refused, but the audio reads well as the start of a command the grammar expects more
    words of ("set the kitchen light to"): a pause cut it, and what follows may finish it."""

    @property
    def command(self) -> CommandMatch | None:
        if self.rejected is None and isinstance(self.match, CommandMatch):
            return self.match
        return None


@dataclass
class GrammarDecoder:
    """Constrained decoding for one grammar load: an automaton per engine state, built once."""

    transcriber: Transcriber
    """Anything with `tokenizer` and `transcribe_within` (`asr.transcriber.Transcriber`)."""
    matcher: Matcher
    config: ConstrainedConfig = field(default_factory=ConstrainedConfig)
    _automata: dict[tuple[frozenset[str], str], TokenAutomaton] = field(default_factory=dict)
    _pieces: list[str] = field(default_factory=list)

    def automaton(self, contexts: Iterable[str], mode: str) -> TokenAutomaton:
        """The active sentences' token automaton (built on first use of this state)."""
        from ..grammar.tokens import TokenAutomaton, surface_pieces

        key = (frozenset(contexts), mode)
        found = self._automata.get(key)
        if found is None:
            if not self._pieces:
                tokenizer = self.transcriber.tokenizer
                names = [tokenizer.piece(i) for i in range(tokenizer.vocab_size)]
                self._pieces = surface_pieces(names)
            active = self.matcher.active(key[0], mode)
            eos = self.transcriber.tokenizer.eos_id
            found = TokenAutomaton(self.matcher.compiled, self._pieces, eos, active)
            self._automata[key] = found
        return found

    def recognize(
        self,
        audio: np.ndarray,
        contexts: Iterable[str] = (),
        mode: str = DEFAULT_MODE,
        t_start: float = 0.0,
    ) -> Recognition:
        automaton = self.automaton(contexts, mode)
        config = self.config
        floor = (
            math.log(config.min_confidence) / config.llr_scale
            if config.min_confidence
            else -math.inf
        )
        free, found = self.transcriber.transcribe_within(
            audio, automaton, t_start, beam=config.beam, floor_per_token=floor
        )
        return self.judge(free, found, contexts, mode)

    def judge(
        self, free: Transcript, found: BeamResult, contexts: Iterable[str], mode: str
    ) -> Recognition:
        """Read the hypotheses as commands, score them against the free text, accept or not."""
        contexts = frozenset(contexts)
        decode = self.transcriber.tokenizer.decode
        commands = _commands(
            [(decode(h.tokens).strip(), h) for h in found.finished],
            lambda text: self.matcher.match(text, contexts, mode),
        )
        if not commands:
            unfinished = self._unfinished(free, found, None)
            reading = self.matcher.match(free.text, contexts, mode)
            reason = "nothing said" if not free.text else "no sentence of the grammar fits"
            return Recognition(
                free, "", reading, 0.0, 0.0, -math.inf, rejected=reason,
                search_ms=found.search_ms, steps=found.steps, unfinished=unfinished,
            )  # fmt: skip
        best_text, best_match, best_hyp, _ = commands[0]
        llr = _llr(best_hyp, free)
        fit = math.exp(min(0.0, llr) * self.config.llr_scale)
        scored = [(text, match, share_ * fit) for text, match, _, share_ in commands]
        confidence = scored[0][2]
        margin = confidence - (scored[1][2] if len(scored) > 1 else 0.0)
        alternatives = tuple(
            Alternative(m.intent, dict(m.slots), text, c) for text, m, c in scored[1:4]
        )
        rejected = None
        unfinished = self._unfinished(free, found, best_hyp)
        if unfinished:
            rejected = "unfinished"  # its end is invented: what follows may say it
        elif confidence < self.config.min_confidence:
            rejected = "low confidence"
        return Recognition(
            free, best_text, best_match, confidence, margin, llr, alternatives, rejected,
            found.search_ms, found.steps, unfinished=unfinished,
        )  # fmt: skip

    def _unfinished(self, free: Transcript, found: BeamResult, best: Hypothesis | None) -> bool:
        """Whether the audio is a command cut short: read as a sentence of the grammar ended
        early, it fits as well as a command must (the same likelihood test against the free
        text), and better than the best whole command by `UNFINISHED_MARGIN`."""
        prefix = found.prefix
        if prefix is None or not free.tokens:
            return False
        if best is not None and prefix.score < best.score + UNFINISHED_MARGIN:
            return False
        fit = math.exp(min(0.0, _llr(prefix, free)) * self.config.llr_scale)
        return fit >= self.config.min_confidence


UNFINISHED_MARGIN = 1.0
"""Nats by which a reading ended inside a command must beat the best whole command for the
audio to count as cut short (e: the whole command is under a third as likely)."""


def _llr(best: Hypothesis, free: Transcript) -> float:
    """Per-token gap between the grammar's best and the free decode (end-of-text counted on
    the grammar's side only: the free decode chose it freely, at a cost of about 0)."""
    free_score = free.avg_logprob * len(free.tokens)
    return (best.score - free_score) / (len(best.tokens) + 1)


def _commands(
    hypotheses: Sequence[tuple[str, Hypothesis]], match: object
) -> list[tuple[str, CommandMatch, Hypothesis, float]]:
    """Hypotheses grouped by the command they give, best first: (text, match, best hypothesis,
    its share of the probability of all found)."""
    groups: dict[tuple[str, str], list[tuple[str, CommandMatch, Hypothesis]]] = {}
    for text, hypothesis in hypotheses:
        result = match(text)  # type: ignore[operator]
        if not isinstance(result, CommandMatch):
            continue
        key = (result.intent, repr(sorted(result.slots.items())))
        groups.setdefault(key, []).append((text, result, hypothesis))
    if not groups:
        return []
    top = max(h.score for group in groups.values() for _, _, h in group)
    mass = {key: sum(math.exp(h.score - top) for _, _, h in group) for key, group in groups.items()}
    total = sum(mass.values())
    ranked = sorted(groups, key=lambda key: -mass[key])
    result = []
    for key in ranked:
        text, command, hypothesis = max(groups[key], key=lambda g: g[2].score)
        result.append((text, command, hypothesis, mass[key] / total))
    return result
