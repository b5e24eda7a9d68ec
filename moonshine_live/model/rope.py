"""Rotary position embedding as Moonshine's checkpoints use it (interleaved pairs, partial rotary,
the RoPE scaling types of transformers' `modeling_rope_utils`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MoonshineConfig


def rope_inverse_frequencies(config: MoonshineConfig, dim: int) -> tuple[Tensor, float]:
    """(inv_freq [ceil(dim/2)], attention_scaling) for the configured RoPE type at its base length.

    Mirrors transformers' modeling_rope_utils so converted checkpoints behave the same.
    """
    scaling = config.rope_scaling or {}
    rope_type = config.rope_type
    base = config.rope_theta
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    inv_freq = 1.0 / (base**exponents)
    original = scaling.get("original_max_position_embeddings", config.max_position_embeddings)
    if rope_type == "linear":
        return inv_freq / scaling["factor"], 1.0
    if rope_type == "llama3":
        return _llama3_frequencies(inv_freq, scaling, original), 1.0
    if rope_type == "yarn":
        return _yarn_frequencies(config, dim, scaling, original)
    if rope_type == "longrope":
        factor = scaling.get("factor") or config.max_position_embeddings / original
        attention = scaling.get("attention_factor")
        if attention is None:
            attention = (
                1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
            )
        short = torch.tensor(scaling["short_factor"], dtype=torch.float32)
        return 1.0 / (short * base**exponents), attention
    return inv_freq, 1.0  # default and dynamic (dynamic rescales per call)


def _llama3_frequencies(inv_freq: Tensor, scaling: dict, original: int) -> Tensor:
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < original / high) * ~(wavelen > original / low)
    return torch.where(is_medium, smoothed, scaled)


def _yarn_frequencies(
    config: MoonshineConfig, dim: int, scaling: dict, original: int
) -> tuple[Tensor, float]:
    base = config.rope_theta
    factor = scaling.get("factor") or config.max_position_embeddings / original

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = scaling.get("attention_factor")
    if attention is None:
        m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low = correction_dim(scaling.get("beta_fast") or 32)
    high = correction_dim(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero, as transformers does
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (
        1.0 / pos_freqs
    ) * extrapolation
    return inv_freq, float(attention)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for partial, interleaved RoPE (Moonshine rotates pairs (x0, x1), (x2, x3)...).

    `dynamic` and `longrope` depend on the sequence length seen so far (max position + 1); it is
    computed with tensor ops so the decode step stays compilable.
    """

    def __init__(self, config: MoonshineConfig, head_dim: int) -> None:
        super().__init__()
        self.rope_type = config.rope_type
        self.head_dim = head_dim
        self.dim = config.rotary_dim(head_dim)
        self.base = config.rope_theta
        self.max_positions = config.max_position_embeddings
        scaling = config.rope_scaling or {}
        self.factor = float(scaling.get("factor") or 1.0)
        self.original = int(
            scaling.get("original_max_position_embeddings", config.max_position_embeddings)
        )
        # Tiny tables, computed on the CPU even while a model is built on the meta device: meta
        # arithmetic runs torch's Python references, whose first use imports dynamo (1-2 s).
        with torch.device("cpu"):
            inv_freq, self.attention_scaling = rope_inverse_frequencies(config, self.dim)
            self.register_buffer("inv_freq", inv_freq, persistent=False)
            if self.rope_type == "longrope":
                long = torch.tensor(scaling["long_factor"], dtype=torch.float32)
                exponents = torch.arange(0, self.dim, 2, dtype=torch.int64).float() / self.dim
                self.register_buffer(
                    "long_inv_freq", 1.0 / (long * self.base**exponents), persistent=False
                )

    def _frequencies(self, positions: Tensor) -> Tensor:
        """inv_freq for this call; only dynamic and longrope look at the length seen so far."""
        if self.rope_type == "dynamic":
            seq_len = positions.max() + 1
            length = torch.clamp(seq_len.float(), min=float(self.max_positions))
            scale = (self.factor * length / self.max_positions) - (self.factor - 1)
            base = self.base * scale ** (self.dim / (self.dim - 2))
            exponents = torch.arange(0, self.dim, 2, device=positions.device).float() / self.dim
            return 1.0 / (base**exponents)
        if self.rope_type == "longrope":
            longer = positions.max() + 1 > self.original
            return torch.where(longer, self.long_inv_freq, self.inv_freq)
        return self.inv_freq

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions [S] (long) -> cos, sin [S, head_dim] in float32, laid out for `apply_rotary`:
        pair i of the rotated dims gets (cos_i, cos_i) and (-sin_i, sin_i); the dims past
        rotary_dim get cos 1 and sin 0 (they pass through unchanged)."""
        # float32 even in a half or double model, as transformers does: fp16 angles lose positions
        inv_freq = self._frequencies(positions).float()
        angles = positions[:, None].float() * inv_freq[None, :]
        cos = angles.cos() * self.attention_scaling
        sin = angles.sin() * self.attention_scaling
        cos = cos.repeat_interleave(2, dim=-1)
        sin = torch.stack((-sin, sin), dim=-1).flatten(-2)
        passing = self.head_dim - cos.shape[-1]  # an odd rotary_dim still rotates whole pairs
        return F.pad(cos, (0, passing), value=1.0), F.pad(sin, (0, passing), value=0.0)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, H, S, D] in interleaved pairs with `RotaryEmbedding` tables [S, D].

    `x * cos + swapped * sin` is, pair by pair, exactly `(x1 cos - x2 sin, x2 cos + x1 sin)`
    (a - b is a + (-b) in IEEE arithmetic) and leaves the passing dims as they are, in four
    tensor ops instead of ten: the encoder applies it 16 times per utterance.
    """
    even = x.shape[-1] - x.shape[-1] % 2  # an odd last dim passes through (sin 0)
    swapped = x[..., :even].unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    if even < x.shape[-1]:
        swapped = torch.cat((swapped, x[..., even:]), dim=-1)
    return x * cos.to(x.dtype) + swapped * sin.to(x.dtype)
