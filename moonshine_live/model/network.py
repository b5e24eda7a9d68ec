"""Moonshine in plain PyTorch: conv stem, RoPE encoder, RoPE decoder with cross-attention.

Only `nn.Module`s live here. The model meets the outside world through `encode()`,
`setup_caches()`, `prefill_cross()` and `decode_step()`; decoding loops, tokenizers and file I/O
live elsewhere. The decoder keeps a static self-attention KV cache ([B, H_kv, max_tokens, D]
buffers written at `input_pos`), so a decode step has fixed shapes and can be compiled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MoonshineConfig
from .rope import RotaryEmbedding, apply_rotary

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
        # One K/V for every row (a beam's hypotheses over one utterance), one query each: the
        # rows attend as the queries of one row, so K/V are read once, not once per row.
        shared = k.shape[0] == 1 and q.shape[2] == 1 and mask is None
        if shared:
            q = q.transpose(0, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )  # fmt: skip
        if shared:
            out = out.transpose(0, 2)
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


def _conv_as_matmul(x: Tensor, conv: nn.Module) -> Tensor:
    """`conv` (no padding or dilation) on time-major x [B, T, C_in] -> [B, T', C_out].

    The weight [C_out, C_in, K] flattens for free to [C_out, C_in * K], matching windows laid out
    channel by channel, tap by tap, which is how `unfold` lays them out. A conv swapped for
    another module (a faster product over the same windows) takes time-major x itself.
    """
    if not isinstance(conv, nn.Conv1d):
        return conv(x)
    (kernel,), (stride,) = conv.kernel_size, conv.stride
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

    def prefill_cross(self, features: Tensor, frame_mask: Tensor | None = None) -> None:
        """Every layer's cross-attention K/V, once per utterance, from features [B, T, hidden]
        (frame_mask [B, T], True = real frame, or None when nothing is padded)."""
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

    def step_state(self) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """What a decode step reads and writes for the current utterance, per layer: (self K
        caches, self V caches, cross K, cross V). Needs `setup_caches` and `prefill_cross`."""
        layers = self.decoder.layers
        caches = [layer.kv_cache for layer in layers]
        assert all(cache is not None for cache in caches), "call setup_caches first"
        return (
            [cache.k_cache for cache in caches],  # type: ignore[union-attr]
            [cache.v_cache for cache in caches],  # type: ignore[union-attr]
            [layer.cross_k for layer in layers],
            [layer.cross_v for layer in layers],
        )

    def bind_step_state(
        self, k_caches: list[Tensor], v_caches: list[Tensor], cross_k: list[Tensor],
        cross_v: list[Tensor],
    ) -> None:  # fmt: skip
        """Let decode steps read and write these tensors (as `step_state` lists them) instead:
        an export hands in its own inputs, and puts the model's back afterwards."""
        for i, layer in enumerate(self.decoder.layers):
            assert layer.kv_cache is not None, "call setup_caches first"
            layer.kv_cache.k_cache, layer.kv_cache.v_cache = k_caches[i], v_caches[i]
            layer.cross_k, layer.cross_v = cross_k[i], cross_v[i]

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
