"""Beam search over what a grammar allows: the best sentences of the grammar for this audio.

Scores are the model's full-vocabulary log-probabilities summed over the tokens (never
renormalised over the allowed ones), so a constrained hypothesis and the free decode of the same
audio can be compared token for token. A hypothesis ends only where the grammar lets a sentence
end. Log-probabilities are at most 0, so once the best finished hypothesis scores above every
live one no live one can overtake it, and the search stops: that early exit never changes the
result.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..model.network import Moonshine


class TokenConstraint(Protocol):
    """What the search needs of a grammar (`grammar.tokens.TokenAutomaton` is one)."""

    start: int

    def allowed(self, state: int) -> tuple[Tensor, list[int]]:
        """(allowed token ids [n], the state after each); end-of-text where a sentence ends."""
        ...


@dataclass(frozen=True)
class Hypothesis:
    """One sentence of the grammar, as tokens, with its per-token log-probabilities."""

    tokens: tuple[int, ...]
    """Without the start token and without end-of-text."""
    token_logprobs: tuple[float, ...]
    """Of every token, end-of-text included (so len = len(tokens) + 1 when finished)."""
    state: int

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


def beam_decode(
    model: Moonshine,
    features: Tensor,
    constraint: TokenConstraint,
    budget: int,
    *,
    beam: int = 4,
    min_score: float = -math.inf,
    early_exit: bool = True,
) -> BeamResult:
    """Decode one encoded utterance (features [1, T, hidden]) within the grammar.

    `beam` rows run as one batch (a step streams the same weights whatever the batch); the
    hypotheses finished by the time the best is certain are returned, best first (confidence
    and alternatives come from them; `early_exit=False` searches to the budget, for tests that
    show the early exit changes nothing). Hypotheses scoring below `min_score` are dropped (scores
    only fall: a caller that would refuse them anyway saves the search to the budget).
    """
    with _own_caches(model, beam, budget + 1):
        return _search(model, features, constraint, budget, beam, min_score, early_exit)


def _search(
    model: Moonshine,
    features: Tensor,
    constraint: TokenConstraint,
    budget: int,
    beam: int,
    min_score: float,
    early_exit: bool,
) -> BeamResult:
    config = model.config
    device = features.device
    eos = config.eos_token_id
    _prefill_shared(model, features, beam)
    live = [Hypothesis((), (), constraint.start)]
    finished: list[Hypothesis] = []
    current = torch.full((beam, 1), config.decoder_start_token_id, dtype=torch.long, device=device)
    steps = 0
    for pos in range(budget):
        steps += 1
        logits = model.decode_step(current, torch.tensor([pos], device=device))[:, -1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        candidates: list[tuple[float, int, int, float, int]] = []  # score, row, token, lp, state
        for row, hypothesis in enumerate(live):
            ids, nexts = constraint.allowed(hypothesis.state)
            if not len(ids):
                continue
            row_logprobs = logprobs[row, ids]
            top = torch.topk(row_logprobs, min(beam, len(ids)))
            base = hypothesis.score
            for lp, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                if math.isfinite(lp) and base + lp >= min_score:
                    token = int(ids[index])
                    candidates.append((base + lp, row, token, lp, nexts[index]))
        candidates.sort(key=lambda c: -c[0])
        chosen: list[tuple[int, Hypothesis]] = []
        for _, row, token, lp, state in candidates:
            parent = live[row]
            if token == eos:
                finished.append(Hypothesis(parent.tokens, (*parent.token_logprobs, lp), state))
            elif len(chosen) < beam:
                chosen.append(
                    (row, Hypothesis((*parent.tokens, token), (*parent.token_logprobs, lp), state))
                )
        finished.sort(key=lambda h: -h.score)
        if not chosen or (early_exit and finished and finished[0].score >= chosen[0][1].score):
            break  # no live hypothesis can overtake the best finished one
        _reorder_caches(model, [row for row, _ in chosen], beam, pos + 1)
        live = [h for _, h in chosen]
        tokens = [h.tokens[-1] for h in live] + [live[0].tokens[-1]] * (beam - len(live))
        current = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]
    return BeamResult(tuple(finished), steps)


@contextlib.contextmanager
def _own_caches(model: Moonshine, beam: int, tokens: int) -> Iterator[None]:
    """Self-attention caches of `beam` rows for this search only: the free decode's caches (and
    a compiled step bound to them) are put back untouched afterwards."""
    layers = model.decoder.layers
    saved = [layer.kv_cache for layer in layers], model.decoder.causal_mask
    model.setup_caches(beam, tokens)
    try:
        yield
    finally:
        for layer, cache in zip(layers, saved[0], strict=True):
            layer.kv_cache = cache
        model.decoder.causal_mask = saved[1]


def _prefill_shared(model: Moonshine, features: Tensor, beam: int) -> None:
    """One cross-attention K/V, shared by every row (expanded, not copied)."""
    model.prefill_cross(features, None)
    for layer in model.decoder.layers:
        layer.cross_k = layer.cross_k.expand(beam, *layer.cross_k.shape[1:])
        layer.cross_v = layer.cross_v.expand(beam, *layer.cross_v.shape[1:])


def _reorder_caches(model: Moonshine, rows: Sequence[int], beam: int, length: int) -> None:
    """Row i of every self-attention cache becomes row rows[i] (the hypothesis it extends)."""
    order = list(rows) + [rows[0]] * (beam - len(rows))
    if order == list(range(beam)):
        return
    index = torch.tensor(order, dtype=torch.long)
    for layer in model.decoder.layers:
        cache = layer.kv_cache
        assert cache is not None
        cache.k_cache[:, :, :length] = cache.k_cache[index, :, :length]
        cache.v_cache[:, :, :length] = cache.v_cache[index, :, :length]
