"""Beam search over what a grammar allows: the best sentences of the grammar for this audio.

Scores are the model's full-vocabulary log-probabilities summed over the tokens (never
renormalised over the allowed ones), so a constrained hypothesis and the free decode of the same
audio can be compared token for token. A hypothesis ends only where the grammar lets a sentence
end. Log-probabilities are at most 0, so once the best finished hypothesis scores above every
live one no live one can overtake it, and the search stops: that early exit never changes the
result.

The free decode of the same audio (what was said, whatever the grammar) can run as one more row
of the same steps: a step streams the same weights whatever its rows, so the free transcript
costs little beside the search, instead of a decode of its own.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..model.decoding import (
    DecodeResult,
    RepetitionGuard,
    RowsStepFn,
    accept_step,
    rows_caches,
    rows_step,
)
from ..model.network import Moonshine

PRUNE_GAP = 10.0
"""Nats behind the best hypothesis of a step at which one is dropped: e^-10 of its share, far
below anything confidence or the alternatives show."""


class TokenConstraint(Protocol):
    """What the search needs of a grammar (`grammar.tokens.TokenAutomaton` is one)."""

    start: int

    def allowed(self, state: int) -> tuple[Tensor, list[int]]:
        """(allowed token ids [n], the state after each); end-of-text where a sentence ends."""
        ...

    def reading(self, token_id: int) -> str:
        """The token as the grammar's normaliser reads it (lower case, separators a space):
        hypotheses that read alike are spellings of one text, and only the best is kept."""
        ...


@dataclass(frozen=True)
class Hypothesis:
    """One sentence of the grammar, as tokens, with its per-token log-probabilities."""

    tokens: tuple[int, ...]
    """Without the start token and without end-of-text."""
    token_logprobs: tuple[float, ...]
    """Of every token, end-of-text included (so len = len(tokens) + 1 when finished)."""
    state: int
    reading: str = ""
    """The tokens as the normaliser reads them ("go to top" for "Go-to, Top")."""

    @property
    def score(self) -> float:
        return sum(self.token_logprobs)


@dataclass(frozen=True)
class BeamResult:
    finished: tuple[Hypothesis, ...]
    """Best first; empty when the grammar had no way through this audio in the budget."""
    steps: int
    """Decoder steps taken (the early exit stops before the budget)."""
    search_ms: float = 0.0
    free: DecodeResult | None = None
    """The free decode's row, when it ran beside the search (`free=True`)."""
    prefix: Hypothesis | None = None
    """The best hypothesis that ended where the grammar cannot end (end-of-text scored there
    as the model gives it): audio that stops inside a command ("set the kitchen light to")
    reads better this way than as any whole command, which would have to invent its end."""


def beam_decode(
    model: Moonshine,
    features: Tensor,
    constraint: TokenConstraint,
    budget: int,
    *,
    beam: int = 4,
    min_score: float = -math.inf,
    early_exit: bool = True,
    free: bool = False,
    guard: RepetitionGuard | None = None,
    floor_per_token: float = -math.inf,
    step: RowsStepFn = rows_step,
    gap: float = PRUNE_GAP,
) -> BeamResult:
    """Decode one encoded utterance (features [1, T, hidden]) within the grammar.

    `beam` rows run as one batch; the hypotheses finished by the time the best is certain are
    returned, best first (confidence and alternatives come from them; `early_exit=False`
    searches to the budget, for tests that show the early exit changes nothing). Hypotheses
    scoring below `min_score` are dropped (scores only fall: a caller that would refuse them
    anyway saves the search to the budget).

    `free`: one more row decodes greedily over the whole vocabulary, as `greedy_decode` would
    (the `guard` stops its loops), into `BeamResult.free`; once it has ended, hypotheses
    scoring `floor_per_token` per token of the budget below it are dropped too. `step`: the
    rows step (`accel.compiled.CompiledRowsStep` runs it as a package). Hypotheses `gap` nats
    behind the best of their step are dropped: the live rows, and so the cost of a step, shrink
    where the audio leaves no doubt.
    """
    with _step_state_kept(model):
        search = _Search(model, constraint, budget, beam, free, guard, step, gap)
        return search.run(features, min_score, floor_per_token, early_exit)


class _Search:
    """One search's rows: row 0 the free decode (when it runs), then the beam's hypotheses."""

    def __init__(
        self,
        model: Moonshine,
        constraint: TokenConstraint,
        budget: int,
        beam: int,
        free: bool,
        guard: RepetitionGuard | None,
        step: RowsStepFn,
        gap: float,
    ) -> None:
        self.model, self.constraint, self.budget, self.beam = model, constraint, budget, beam
        self.guard, self.step, self.gap = guard, step, gap
        self.offset = 1 if free else 0
        self.k_caches, self.v_caches = rows_caches(model, self.offset + beam)
        # the free row, as greedy_decode keeps it
        self.free_tokens: list[list[int]] = [[]]
        self.free_logprobs: list[list[float]] = [[]]
        self.free_reason: list[str | None] = [None if free else "off"]

    def run(
        self, features: Tensor, min_score: float, floor_per_token: float, early_exit: bool
    ) -> BeamResult:
        model, beam, offset = self.model, self.beam, self.offset
        config = model.config
        eos = config.eos_token_id
        model.prefill_cross(features, None)
        cross_k = [layer.cross_k for layer in model.decoder.layers]
        cross_v = [layer.cross_v for layer in model.decoder.layers]
        live = [Hypothesis((), (), self.constraint.start)]
        finished: list[Hypothesis] = []
        tokens = [config.decoder_start_token_id] * (offset + beam)
        searching, steps = True, 0
        self.prefix: Hypothesis | None = None
        for pos in range(self.budget):
            freeing = self.free_reason[0] is None
            low, high = (0 if freeing else offset), offset + (len(live) if searching else 0)
            state = (
                [k[low:high] for k in self.k_caches],
                [v[low:high] for v in self.v_caches],
                cross_k,
                cross_v,
            )
            current = torch.tensor(tokens[low:high], device=features.device)[:, None]
            logprobs = self.step(model, current, pos, state)
            steps += 1
            if freeing:
                tokens[0] = self._free_step(logprobs[0], eos)
                if self.free_reason[0] is not None and math.isfinite(floor_per_token):
                    floor = sum(self.free_logprobs[0]) + floor_per_token * (self.budget + 1)
                    min_score = max(min_score, floor)
            if searching:
                chosen = self._choose(logprobs[offset - low :], live, finished, min_score, eos)
                best_live = chosen[0][1].score if chosen else -math.inf
                if not chosen or (early_exit and finished and finished[0].score >= best_live):
                    searching = False  # no live hypothesis can overtake the best finished one
                else:
                    self._reorder([row for row, _ in chosen], pos + 1)
                    live = [h for _, h in chosen]
                    tokens[offset : offset + len(live)] = [h.tokens[-1] for h in live]
            if not searching and self.free_reason[0] is not None:
                break
        reason = self.free_reason[0]
        free = (
            None
            if reason == "off"
            else DecodeResult(
                tuple(self.free_tokens[0]), tuple(self.free_logprobs[0]), reason or "budget"
            )
        )
        return BeamResult(tuple(finished), steps, free=free, prefix=self.prefix)

    def _free_step(self, logprobs: Tensor, eos: int) -> int:
        logprob, token = logprobs.max(dim=-1)
        chosen = int(token)
        accept_step(
            [chosen], [float(logprob)], self.free_tokens, self.free_logprobs, self.free_reason,
            [self.budget], self.guard, eos,
        )  # fmt: skip
        return chosen

    def _choose(
        self,
        logprobs: Tensor,
        live: list[Hypothesis],
        finished: list[Hypothesis],
        min_score: float,
        eos: int,
    ) -> list[tuple[int, Hypothesis]]:
        """The next live hypotheses (with the row each extends), best first; those that end
        here go to `finished` (kept best first)."""
        beam = self.beam
        candidates: list[tuple[float, int, int, float, int]] = []  # score, row, token, lp, state
        ends = logprobs[: len(live), eos].tolist()
        for row, hypothesis in enumerate(live):
            ids, nexts = self.constraint.allowed(hypothesis.state)
            if hypothesis.tokens and not bool((ids == eos).any()):
                self._ended_early(hypothesis, ends[row])
            if not len(ids):
                continue
            top = torch.topk(logprobs[row, ids], min(beam, len(ids)))
            base = hypothesis.score
            for lp, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                if math.isfinite(lp) and base + lp >= min_score:
                    candidates.append((base + lp, row, int(ids[index]), lp, nexts[index]))
        candidates.sort(key=lambda c: -c[0])
        chosen: list[tuple[int, Hypothesis]] = []
        readings: set[str] = set()
        for score, row, token, lp, state in candidates:
            if score < candidates[0][0] - self.gap:
                break  # too far behind the best to matter (a row saved for every step after)
            parent = live[row]
            if token == eos:
                finished.append(
                    Hypothesis(parent.tokens, (*parent.token_logprobs, lp), state, parent.reading)
                )
            elif len(chosen) < beam:
                text = _read_on(parent.reading, self.constraint.reading(token))
                if text in readings:
                    continue  # a likelier spelling of the same text holds a row already
                readings.add(text)
                tokens, logprobs = (*parent.tokens, token), (*parent.token_logprobs, lp)
                chosen.append((row, Hypothesis(tokens, logprobs, state, text)))
        finished.sort(key=lambda h: -h.score)
        return chosen

    def _ended_early(self, hypothesis: Hypothesis, eos_logprob: float) -> None:
        """Keep the best hypothesis ended where the grammar cannot end (`BeamResult.prefix`)."""
        score = hypothesis.score + eos_logprob
        if self.prefix is None or score > self.prefix.score:
            logprobs = (*hypothesis.token_logprobs, eos_logprob)
            self.prefix = Hypothesis(hypothesis.tokens, logprobs, hypothesis.state)

    def _reorder(self, parents: Sequence[int], length: int) -> None:
        """Beam row i of every self-attention cache becomes the row of parents[i] (the
        hypothesis it extends); the free row stays."""
        offset, count = self.offset, len(parents)
        if list(parents) == list(range(count)):
            return
        index = torch.tensor(parents, dtype=torch.long, device=self.k_caches[0].device) + offset
        for cache in (*self.k_caches, *self.v_caches):
            cache[offset : offset + count, :, :length] = cache[index, :, :length]


def _read_on(text: str, piece: str) -> str:
    """`text` with one more token's reading: one space between words, none at the start."""
    if not text or text.endswith(" "):
        piece = piece.lstrip(" ")
    return text + piece


@contextlib.contextmanager
def _step_state_kept(model: Moonshine) -> Iterator[None]:
    """The search steps on caches of its own: the free decode's step state (and a packaged
    step bound to it) is put back untouched afterwards."""
    if model.decoder.layers[0].kv_cache is None:
        model.setup_caches(1, model.config.max_position_embeddings)
    saved = model.step_state()
    try:
        yield
    finally:
        model.bind_step_state(*saved)
