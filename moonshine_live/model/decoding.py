"""Greedy decoding over the model's `decode_step`, with a token budget and a repetition guard.

Grammar-agnostic: a constraint plugs in through `LogitFilter`, which works on tensors only (a
per-row state, and a mask of allowed tokens that the step applies to its logits before choosing),
so a constrained step compiles as one graph too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .network import Moonshine

_LOGGER = logging.getLogger(__name__)

StepFn = Callable[[Moonshine, Tensor, Tensor, "Tensor | None"], tuple[Tensor, Tensor]]
"""(model, tokens [B, 1], input_pos [1], allowed [B, vocab] or None) -> (token [B], logprob [B])."""


@dataclass(frozen=True)
class DecodeResult:
    """One utterance's greedy decode."""

    tokens: tuple[int, ...]
    """Generated ids, without the start token and without end-of-text."""
    token_logprobs: tuple[float, ...]
    stop_reason: str
    """"eos" (model ended), "budget" (token cap for the audio length) or "repetition"."""

    @property
    def avg_logprob(self) -> float:
        """Mean log probability of the kept tokens (0.0 when there are none)."""
        return sum(self.token_logprobs) / len(self.token_logprobs) if self.token_logprobs else 0.0


class LogitFilter(Protocol):
    """A per-step constraint: `allowed(state)` masks the vocabulary, `advance` moves the state."""

    def initial_state(self, batch_size: int, device: torch.device) -> Tensor:
        """state [B] (long) before the first generated token."""
        ...

    def allowed(self, state: Tensor) -> Tensor:
        """state [B] -> allowed [B, vocab] (bool): the tokens each row may choose next."""
        ...

    def advance(self, state: Tensor, tokens: Tensor) -> Tensor:
        """state [B], chosen tokens [B] -> next state [B]."""
        ...


@dataclass(frozen=True)
class RepetitionGuard:
    """Stop a decode stuck in a loop: the same n-gram repeated back to back too often.

    Moonshine, like other seq2seq ASR models, can loop on noise or clipped audio.
    """

    max_ngram: int = 4
    """Longest repeated phrase looked for (tokens)."""
    max_single_repeats: int = 6
    """A single token repeated this many times in a row is a loop."""
    max_phrase_repeats: int = 4
    """A phrase of 2..max_ngram tokens repeated this many times in a row is a loop."""

    def loop_start(self, tokens: list[int]) -> int | None:
        """Index where the looping tail starts after its first copy, or None when not looping."""
        for n in range(1, self.max_ngram + 1):
            limit = self.max_single_repeats if n == 1 else self.max_phrase_repeats
            if len(tokens) < n * limit:
                continue
            tail = tokens[-n:]
            if all(tokens[-(i + 1) * n : len(tokens) - i * n] == tail for i in range(limit)):
                return len(tokens) - (limit - 1) * n
        return None


def token_budget(
    num_samples: int,
    sample_rate: int,
    max_tokens_per_s: float,
    min_tokens: int,
    max_positions: int,
) -> int:
    """New tokens allowed for an utterance: proportional to its length, within the model's range.

    Moonshine emits about 3 tokens per second of speech; the cap keeps a model that hallucinates
    on noise from running on (the reference uses 6.5 tokens/s).
    """
    by_length = int(max_tokens_per_s * num_samples / sample_rate)
    return max(1, min(max(by_length, min_tokens), max_positions - 1))


def decode_step(
    model: Moonshine,
    tokens: Tensor,
    input_pos: Tensor,
    allowed: Tensor | None = None,
    attend_to: int | None = None,
) -> tuple[Tensor, Tensor]:
    """One decoder step and its greedy choice: tokens [B, 1] at input_pos [1] -> (next token [B],
    its log-probability [B]); `allowed` [B, vocab] (bool) masks the logits first.

    The single function `accel/compiled.py` compiles: choosing inside the step saves a pass over the
    logits, and shapes never change between steps. `attend_to` (`Decoder.forward`) is for the
    packaged step, where it is a dynamic size.
    """
    logits = model.decode_step(tokens, input_pos, attend_to)[:, -1]
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    logprob, token = torch.log_softmax(logits, dim=-1).max(dim=-1)
    return token, logprob


StepState = tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]
"""What a step reads and writes, per layer: self K caches, self V caches, cross K, cross V."""

RowsStepFn = Callable[[Moonshine, Tensor, int, StepState], Tensor]
"""(model, tokens [R, 1], position, state) -> log-probabilities [R, vocab]: `rows_step`."""


def rows_caches(model: Moonshine, rows: int) -> tuple[list[Tensor], list[Tensor]]:
    """Self-attention caches (K, V per layer) of `rows` rows and the model's maximum length,
    for a rows step; uninitialised, since a search writes a position before it reads it."""
    weight = model.decoder.norm.weight
    shapes = [
        (rows, layer.attn.num_kv_heads, model.config.max_position_embeddings, layer.attn.head_dim)
        for layer in model.decoder.layers
    ]

    def make() -> list[Tensor]:
        return [torch.empty(s, dtype=weight.dtype, device=weight.device) for s in shapes]

    return make(), make()


def rows_step(model: Moonshine, tokens: Tensor, position: int, state: StepState) -> Tensor:
    """One decoder step of R rows over one utterance (the cross K/V in `state` have batch 1):
    every row's log-probabilities over the whole vocabulary, for a search that keeps several
    hypotheses. The model's own step state is replaced by `state` (the caller puts its back);
    `accel/compiled.py` runs the same as a package."""
    model.bind_step_state(*state)
    pos = torch.tensor([position], device=tokens.device)
    logits = model.decode_step(tokens, pos, attend_to=position + 1)[:, -1]
    return torch.log_softmax(logits.float(), dim=-1)


def greedy_decode(
    model: Moonshine,
    features: Tensor,
    frame_mask: Tensor | None,
    budgets: list[int],
    *,
    step: StepFn = decode_step,
    logit_filter: LogitFilter | None = None,
    guard: RepetitionGuard | None = None,
    pad_frames_to: int = 1,
) -> list[DecodeResult]:
    """Decode a batch of encoded utterances (features [B, T, hidden]) greedily.

    Each row stops at end-of-text, at its own budget, or when the guard sees a loop.
    `pad_frames_to`: see `pad_frames`.
    """
    config = model.config
    batch = features.shape[0]
    device = features.device
    max_steps = max(budgets)
    _ensure_caches(model, batch, max_steps + 1)
    model.prefill_cross(*pad_frames(features, frame_mask, pad_frames_to))
    current = torch.full((batch, 1), config.decoder_start_token_id, dtype=torch.long, device=device)
    state = logit_filter.initial_state(batch, device) if logit_filter else None
    rows: list[list[int]] = [[] for _ in range(batch)]
    logprobs: list[list[float]] = [[] for _ in range(batch)]
    reasons: list[str | None] = [None] * batch
    for pos in range(max_steps):
        allowed = logit_filter.allowed(state) if logit_filter is not None else None
        chosen, chosen_logprob = step(model, current, torch.tensor([pos], device=device), allowed)
        if logit_filter is not None:
            state = logit_filter.advance(state, chosen)
        accept_step(
            chosen.tolist(),
            chosen_logprob.tolist(),
            rows,
            logprobs,
            reasons,
            budgets,
            guard,
            config.eos_token_id,
        )
        if all(reason is not None for reason in reasons):
            break
        current = chosen[:, None]
    return [
        DecodeResult(tuple(r), tuple(lp), reason or "budget")
        for r, lp, reason in zip(rows, logprobs, reasons, strict=True)
    ]


def pad_frames(
    features: Tensor, frame_mask: Tensor | None, multiple: int
) -> tuple[Tensor, Tensor | None]:
    """features [B, T, hidden] and its mask with T rounded up to a multiple with zero frames the
    mask hides, so a step that must keep its shapes (CUDA graphs) sees a few lengths instead of
    every length; with `multiple` > 1 there is always a mask, so one graph fits all."""
    if multiple == 1:
        return features, frame_mask
    frames = features.shape[1]
    if frame_mask is None:
        frame_mask = torch.ones(features.shape[0], frames, dtype=torch.bool, device=features.device)
    padding = -frames % multiple
    if padding:
        features = F.pad(features, (0, 0, 0, padding))
        frame_mask = F.pad(frame_mask, (0, padding), value=False)
    return features, frame_mask


def accept_step(
    chosen: list[int],
    chosen_logprob: list[float],
    rows: list[list[int]],
    logprobs: list[list[float]],
    reasons: list[str | None],
    budgets: list[int],
    guard: RepetitionGuard | None,
    eos_id: int,
) -> None:
    """Append each unfinished row's token and mark rows that stop here."""
    for i, (token, logprob) in enumerate(zip(chosen, chosen_logprob, strict=True)):
        if reasons[i] is not None:
            continue
        if token == eos_id:
            reasons[i] = "eos"
            continue
        rows[i].append(token)
        logprobs[i].append(logprob if math.isfinite(logprob) else -1e9)
        loop_at = guard.loop_start(rows[i]) if guard else None
        if loop_at is not None:
            _LOGGER.debug("repetition loop in row %d, keeping %d tokens", i, loop_at)
            del rows[i][loop_at:], logprobs[i][loop_at:]
            reasons[i] = "repetition"
        elif len(rows[i]) >= budgets[i]:
            reasons[i] = "budget"


def _ensure_caches(model: Moonshine, batch: int, needed_tokens: int) -> None:
    """(Re)allocate the static caches only when the batch or length outgrows them."""
    cache = model.decoder.layers[0].kv_cache
    if (
        cache is not None
        and cache.k_cache.shape[0] == batch
        and cache.k_cache.shape[2] >= needed_tokens
    ):
        return
    size = max(needed_tokens, model.config.max_position_embeddings)
    model.setup_caches(batch, size)
