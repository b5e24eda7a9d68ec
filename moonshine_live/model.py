"""Moonshine in plain PyTorch: conv stem, RoPE encoder, RoPE decoder with cross-attention.

Only `nn.Module`s live here. The model meets the outside world through `encode()`,
`setup_caches()`, `prefill_cross()` and `decode_step()`; decoding loops, tokenizers and file I/O
live elsewhere. The decoder keeps a static self-attention KV cache ([B, H_kv, max_tokens, D]
buffers written at `input_pos`), so a decode step has fixed shapes and can be compiled.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model_config import MoonshineConfig

# Conv stem geometry (Moonshine paper, fig. 1): 16 kHz audio -> 41.7 frames per second.
CONV1_KERNEL, CONV1_STRIDE = 127, 64
CONV2_KERNEL, CONV2_STRIDE = 7, 3
CONV3_KERNEL, CONV3_STRIDE = 3, 2
GROUPNORM_EPS = 1e-5
LAYERNORM_EPS = 1e-5
# Fewest samples the stem accepts: conv3 needs 3 conv2 frames, which need 13 conv1 frames.
MIN_SAMPLES = CONV1_KERNEL + CONV1_STRIDE * ((CONV3_KERNEL - 1) * CONV2_STRIDE + CONV2_KERNEL - 1)


def num_frames(num_samples: int) -> int:
    """Encoder frames for `num_samples` of 16 kHz audio (the stem's three strided convs)."""
    n1 = (num_samples - CONV1_KERNEL) // CONV1_STRIDE + 1
    n2 = (n1 - CONV2_KERNEL) // CONV2_STRIDE + 1
    return (n2 - CONV3_KERNEL) // CONV3_STRIDE + 1


def activation(name: str) -> nn.Module:
    """The transformers activation of that name (exact-erf GELU for "gelu")."""
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    return {"gelu": nn.GELU(), "silu": nn.SiLU(), "swish": nn.SiLU(), "relu": nn.ReLU()}[name]


# -- rotary position embedding -----------------------------------------------------------------


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


# -- attention ----------------------------------------------------------------------------------


class KVCache(nn.Module):
    """Static self-attention cache: K/V buffers [B, H_kv, max_tokens, D] written at `input_pos`."""

    def __init__(
        self, batch_size: int, kv_heads: int, max_tokens: int, head_dim: int, dtype: torch.dtype
    ) -> None:
        super().__init__()
        shape = (batch_size, kv_heads, max_tokens, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype), persistent=False)

    def update(self, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, H_kv, S, D] at positions input_pos [S]; return the whole cache."""
        self.k_cache.index_copy_(2, input_pos, k)
        self.v_cache.index_copy_(2, input_pos, v)
        return self.k_cache, self.v_cache


class Attention(nn.Module):
    """Multi-head attention with grouped K/V heads (GQA/MQA) and optional head-dim padding."""

    def __init__(self, config: MoonshineConfig, num_heads: int, num_kv_heads: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = config.hidden_size // num_heads
        self.scale = self.head_dim**-0.5
        bias = config.attention_bias
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden, bias=False)
        multiple = config.pad_head_dim_to_multiple_of or 1
        self.head_dim_padding = -self.head_dim % multiple
        # Padding only helps fused GPU kernels; it never changes results, so CPU skips it.
        self.pad_heads = False

    def project_q(self, x: Tensor) -> Tensor:
        """x [B, S, hidden] -> q [B, H, S, D]."""
        return self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, hidden] -> k, v [B, H_kv, T, D]."""
        k = self.k_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(1, 2)
        return k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Softmax attention; mask is boolean (True = may attend), broadcast to [B, H, S, T]."""
        if self.pad_heads and self.head_dim_padding:
            q, k, v = (F.pad(t, (0, self.head_dim_padding)) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )  # fmt: skip
        out = out[..., : self.head_dim]
        return self.o_proj(out.transpose(1, 2).flatten(-2))


class EncoderMLP(nn.Module):
    def __init__(self, config: MoonshineConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.encoder_hidden_act)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GatedMLP(nn.Module):
    """Decoder SwiGLU: fc1 makes [value | gate]; out = fc2(act(gate) * value)."""

    def __init__(self, config: MoonshineConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, 2 * config.intermediate_size)
        self.act = activation(config.decoder_hidden_act)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(self.act(gate) * value)


def layer_norm(config: MoonshineConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=LAYERNORM_EPS, bias=False)


# -- encoder ------------------------------------------------------------------------------------


class AudioStem(nn.Module):
    """Raw 16 kHz audio -> frames: conv(stride 64)+tanh, group norm, conv(3)+GELU, conv(2)+GELU."""

    def __init__(self, config: MoonshineConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.conv1 = nn.Conv1d(1, dim, CONV1_KERNEL, stride=CONV1_STRIDE, bias=False)
        self.groupnorm = nn.GroupNorm(1, dim, eps=GROUPNORM_EPS)
        self.conv2 = nn.Conv1d(dim, 2 * dim, CONV2_KERNEL, stride=CONV2_STRIDE)
        self.conv3 = nn.Conv1d(2 * dim, dim, CONV3_KERNEL, stride=CONV3_STRIDE)

    def forward(self, audio: Tensor) -> Tensor:
        """audio [B, samples] -> [B, frames, hidden].

        Each conv runs as one matrix product over its windows (time-major, "im2col"): on a CPU
        that beats the conv kernel by 10-30% (conv2 at 2 s: 6.6 -> 4.8 ms, 2026-12-01), and the
        frames come out time-major, as the encoder wants them. Same sums, other order: the
        features differ from the conv kernel's by float32 rounding (1e-5).
        """
        x = torch.tanh(_conv_as_matmul(audio[:, :, None], self.conv1))  # [B, T, C]
        x = self.groupnorm(x.transpose(1, 2)).transpose(1, 2)  # normalizes over all of T x C
        x = F.gelu(_conv_as_matmul(x, self.conv2))
        return F.gelu(_conv_as_matmul(x, self.conv3))


class ConvAsLinear(nn.Module):
    """A conv (no padding or dilation) as a linear module over its windows (`_conv_as_matmul`),
    for a linear kernel that is not `F.linear` (`amx.AmxLinear`), which takes rows with a
    stride: its windows are laid out tap by tap (all channels of a tap together), so each is a
    slice of the time-major input and the window matrix is a view, not a copy (0.7 ms of the 2 s
    stem, 2026-12-02). Its weight must be flattened in that order: [C_out, K, C_in]."""

    def __init__(self, linear: nn.Module, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.linear = linear
        self.kernel_size, self.stride = (kernel_size,), (stride,)

    def forward(self, windows: Tensor) -> Tensor:
        return self.linear(windows)


def _conv_as_matmul(x: Tensor, conv: nn.Conv1d | ConvAsLinear) -> Tensor:
    """`conv` (no padding or dilation) on time-major x [B, T, C_in] -> [B, T', C_out].

    The weight [C_out, C_in, K] flattens for free to [C_out, C_in * K], matching windows laid out
    channel by channel, tap by tap, which is how `unfold` lays them out.
    """
    (kernel,), (stride,) = conv.kernel_size, conv.stride
    if isinstance(conv, ConvAsLinear):  # [B, T', K * C_in], a view of time-major x
        return conv(x.contiguous().unfold(1, kernel, stride).transpose(2, 3).flatten(2))
    windows = x.unfold(1, kernel, stride).flatten(2)  # [B, T', C_in * K]
    return F.linear(windows, conv.weight.flatten(1), conv.bias)


class EncoderLayer(nn.Module):
    def __init__(self, config: MoonshineConfig) -> None:
        super().__init__()
        heads = config.encoder_num_attention_heads
        self.attn_norm = layer_norm(config)
        self.attn = Attention(config, heads, config.encoder_num_key_value_heads or heads)
        self.mlp_norm = layer_norm(config)
        self.mlp = EncoderMLP(config)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None) -> Tensor:
        h = self.attn_norm(x)
        q = apply_rotary(self.attn.project_q(h), cos, sin)
        k, v = self.attn.project_kv(h)
        x = x + self.attn.attend(q, apply_rotary(k, cos, sin), v, mask)
        return x + self.mlp(self.mlp_norm(x))


class Encoder(nn.Module):
    def __init__(self, config: MoonshineConfig) -> None:
        super().__init__()
        self.stem = AudioStem(config)
        self.rotary = RotaryEmbedding(config, config.encoder_head_dim)
        self.layers = nn.ModuleList(
            EncoderLayer(config) for _ in range(config.encoder_num_hidden_layers)
        )
        self.norm = layer_norm(config)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """Stem output x [B, T, hidden], key_mask [B, T] (True = real frame) -> [B, T, hidden]."""
        cos, sin = self.rotary(torch.arange(x.shape[1], device=x.device))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)


# -- decoder ------------------------------------------------------------------------------------


class DecoderLayer(nn.Module):
    def __init__(self, config: MoonshineConfig) -> None:
        super().__init__()
        heads = config.decoder_num_attention_heads
        kv_heads = config.decoder_num_key_value_heads or heads
        self.attn_norm = layer_norm(config)
        self.attn = Attention(config, heads, kv_heads)
        self.cross_norm = layer_norm(config)
        self.cross_attn = Attention(config, heads, kv_heads)
        self.mlp_norm = layer_norm(config)
        self.mlp = GatedMLP(config)
        self.kv_cache: KVCache | None = None
        self.cross_k: Tensor | None = None  # [B, H_kv, T, D], set once per utterance
        self.cross_v: Tensor | None = None

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], input_pos: Tensor,
        self_mask: Tensor | None, cross_mask: Tensor | None, attend_to: int | None = None,
    ) -> Tensor:  # fmt: skip
        """`attend_to`: see `Decoder.forward`."""
        assert self.kv_cache is not None and self.cross_k is not None, "call setup_caches first"
        h = self.attn_norm(x)
        q = apply_rotary(self.attn.project_q(h), *rope)
        k, v = self.attn.project_kv(h)
        k, v = self.kv_cache.update(input_pos, apply_rotary(k, *rope), v)
        if attend_to is not None:
            k, v = k[:, :, :attend_to], v[:, :, :attend_to]
        x = x + self.attn.attend(q, k, v, self_mask)
        q = self.cross_attn.project_q(self.cross_norm(x))
        x = x + self.cross_attn.attend(q, self.cross_k, self.cross_v, cross_mask)
        return x + self.mlp(self.mlp_norm(x))


class Decoder(nn.Module):
    def __init__(self, config: MoonshineConfig) -> None:
        super().__init__()
        # nn.Embedding's own init, skipped on the meta device (a checkpoint fills it there):
        # normal_ on meta runs torch's Python references, whose first use imports dynamo (1-2 s).
        weight = torch.empty(config.vocab_size, config.hidden_size)
        if not weight.is_meta:
            nn.init.normal_(weight)
        self.embed_tokens = nn.Embedding(*weight.shape, _weight=weight)
        self.rotary = RotaryEmbedding(config, config.decoder_head_dim)
        self.layers = nn.ModuleList(
            DecoderLayer(config) for _ in range(config.decoder_num_hidden_layers)
        )
        self.norm = layer_norm(config)
        self.register_buffer("causal_mask", torch.ones(0, 0, dtype=torch.bool), persistent=False)
        self.cross_mask: Tensor | None = None  # [B, 1, 1, T] or None when nothing is padded

    def forward(self, tokens: Tensor, input_pos: Tensor, attend_to: int | None = None) -> Tensor:
        """tokens [B, S] at positions input_pos [S] -> hidden [B, S, hidden].

        `attend_to` (one token, S = 1, at position `attend_to - 1`): the self-attention reads
        only the cache positions written so far instead of the whole cache under the causal
        mask; same result, and a step reads 5 MB less (the cache holds the model's maximum).
        """
        x = self.embed_tokens(tokens)
        rope = self.rotary(input_pos)
        self_mask = None if attend_to is not None else self.causal_mask[input_pos][None, None]
        for layer in self.layers:
            x = layer(x, rope, input_pos, self_mask, self.cross_mask, attend_to)
        return self.norm(x)


# -- the whole model ----------------------------------------------------------------------------


class Moonshine(nn.Module):
    """Encoder-decoder speech recognizer; see the module docstring for the four calls."""

    def __init__(self, config: MoonshineConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.proj_out = (
            None
            if config.tie_word_embeddings
            else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        )
        self.head: nn.Module | None = None
        """An output head replacing the (tied) float one, e.g. an int8 kernel; None = float."""
        self.cross_kv: tuple[Tensor, Tensor | None] | None = None
        """All cross-attention K and V weights (and biases) stacked; see `fuse_cross_kv`."""
        self.cross_kv_linear: nn.Module | None = None
        """The stacked cross K/V product by another kernel (`amx.AmxLinear`); None: F.linear."""

    def fuse_cross_kv(self) -> None:
        """Stack every layer's cross-attention K and V projections into one weight, the layers'
        own weights becoming views of it: the prefill is then one matrix product instead of 16
        (2 s: 4.5 -> 2.8 ms, 10 s: 14.0 -> 12.1 ms, bit-identical; 2026-12-01), and no weight is
        stored twice. Only float linears of one kind (all with bias or all without) are fused."""
        projections = [
            projection
            for layer in self.decoder.layers
            for projection in (layer.cross_attn.k_proj, layer.cross_attn.v_proj)
        ]
        if not all(type(p) is nn.Linear and not p.weight.is_meta for p in projections):
            return
        biased = [p.bias is not None for p in projections]
        if any(biased) != all(biased):
            return
        weight = torch.cat([p.weight for p in projections])
        bias = torch.cat([p.bias for p in projections]) if all(biased) else None  # type: ignore[misc]
        start = 0
        for p in projections:
            rows = slice(start, start + p.out_features)
            p.weight = nn.Parameter(weight[rows], requires_grad=False)
            if bias is not None:
                p.bias = nn.Parameter(bias[rows], requires_grad=False)
            start = rows.stop
        self.cross_kv = (weight, bias)

    def encode(
        self,
        audio: Tensor,
        num_samples: list[int] | None = None,
        layers: Callable[[Tensor, Tensor | None], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """audio [B, samples] -> (features [B, T, hidden], frame_mask [B, T] or None).

        Rows of a batch may be zero-padded; `num_samples` gives their true lengths. The stem runs on
        each row's own samples because its group norm spans the whole utterance. `layers` runs
        the encoder's layers instead of `self.encoder` (a compiled form of it).
        """
        layers = layers or self.encoder
        lengths = num_samples or [audio.shape[1]] * audio.shape[0]
        if all(n == audio.shape[1] for n in lengths):
            return layers(self.encoder.stem(audio), None), None
        frames = [self.encoder.stem(audio[i : i + 1, :n])[0] for i, n in enumerate(lengths)]
        counts = torch.tensor([f.shape[0] for f in frames], device=audio.device)
        stacked = nn.utils.rnn.pad_sequence(frames, batch_first=True)
        mask = torch.arange(stacked.shape[1], device=audio.device)[None, :] < counts[:, None]
        return layers(stacked, mask), mask

    def setup_caches(
        self, batch_size: int, max_tokens: int, dtype: torch.dtype | None = None
    ) -> None:
        """Allocate the static self-attention caches and the causal mask for max_tokens."""
        weight = self.decoder.norm.weight  # the embedding may be an int8 table
        dtype = dtype or weight.dtype
        for layer in self.decoder.layers:
            attn = layer.attn
            layer.kv_cache = KVCache(
                batch_size, attn.num_kv_heads, max_tokens, attn.head_dim, dtype
            ).to(weight.device)
        mask = torch.ones(max_tokens, max_tokens, dtype=torch.bool, device=weight.device)
        self.decoder.causal_mask = torch.tril(mask)

    def prefill_cross(
        self, features: Tensor, frame_mask: Tensor | None = None, pad_frames_to: int = 1
    ) -> None:
        """Every layer's cross-attention K/V, once per utterance, from features [B, T, hidden].

        `pad_frames_to` rounds T up to a multiple with zero frames that the mask hides, so a step
        that must keep its shapes (CUDA graphs) sees a few lengths instead of every length.
        """
        frames = features.shape[1]
        padding = -frames % pad_frames_to
        if pad_frames_to > 1 and frame_mask is None:  # a mask always, so one graph fits all
            frame_mask = torch.ones(
                features.shape[0], frames, dtype=torch.bool, device=features.device
            )
        if padding:
            features = F.pad(features, (0, 0, 0, padding))
            frame_mask = F.pad(frame_mask, (0, padding), value=False)
        layers = self.decoder.layers
        if self.cross_kv is not None or self.cross_kv_linear is not None:
            attention = layers[0].cross_attn
            kv = (  # [B, T, 2 x layers x H_kv x D]
                self.cross_kv_linear(features)
                if self.cross_kv_linear is not None
                else F.linear(features, *self.cross_kv)  # type: ignore[misc]
            )
            # -> [2 x layers, B, H_kv, T, D]: each layer's K and V contiguous
            parts = kv.unflatten(-1, (-1, attention.num_kv_heads, attention.head_dim))
            parts = parts.permute(2, 0, 3, 1, 4).contiguous()
            for i, layer in enumerate(layers):
                layer.cross_k, layer.cross_v = parts[2 * i], parts[2 * i + 1]
        else:
            for layer in layers:  # contiguous: what a packaged step takes (and reads best)
                k, v = layer.cross_attn.project_kv(features)
                layer.cross_k, layer.cross_v = k.contiguous(), v.contiguous()
        self.decoder.cross_mask = None if frame_mask is None else frame_mask[:, None, None, :]

    def decode_step(
        self, tokens: Tensor, input_pos: Tensor, attend_to: int | None = None
    ) -> Tensor:
        """tokens [B, S] at input_pos [S] -> logits [B, S, vocab] (float32); `attend_to`: see
        `Decoder.forward`."""
        hidden = self.decoder(tokens, input_pos, attend_to)
        if self.head is not None:
            return self.head(hidden).float()
        head = self.decoder.embed_tokens.weight if self.proj_out is None else self.proj_out.weight
        return F.linear(hidden, head).float()
