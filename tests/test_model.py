"""Random-weight parity with transformers' Moonshine on small configs (every attention layout and
RoPE variant), plus self-consistency of batching and the static KV cache."""

from __future__ import annotations

import pytest
import torch
from conftest import require_module

from moonshine_live.checkpoint.keymap import hf_to_ours, ours_to_hf
from moonshine_live.model.config import MoonshineConfig
from moonshine_live.model.network import MIN_SAMPLES, Moonshine, num_frames
from moonshine_live.model.rope import RotaryEmbedding, apply_rotary

pytestmark = pytest.mark.needs_reference

SMALL = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    encoder_num_hidden_layers=2,
    decoder_num_hidden_layers=2,
    encoder_num_attention_heads=4,
    decoder_num_attention_heads=4,
    max_position_embeddings=16,
)
# transformers' MoonshineAttention writes head counts into the shared config, so its encoder and
# decoder only behave as configured when both sides use the same counts; we test within that.
LAYOUTS = {
    "mha": dict(),
    "padded-head": dict(hidden_size=48, pad_head_dim_to_multiple_of=8),
    "partial-0.5": dict(partial_rotary_factor=0.5),
    "partial-odd": dict(hidden_size=80, partial_rotary_factor=0.55),  # rotary dim 11 -> 12
    "full-rotary": dict(partial_rotary_factor=1.0),
    "bias-gelu-tanh": dict(attention_bias=True, encoder_hidden_act="gelu_pytorch_tanh"),
    "untied": dict(tie_word_embeddings=False),
}
ROPE_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
    "longrope": {
        "rope_type": "longrope",
        "short_factor": [1.0, 1.1, 1.2, 1.3, 1.5, 1.7, 2.0],
        "long_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
        "original_max_position_embeddings": 8,
    },
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8,
    },
}
AUDIO_SAMPLES = 12_000  # 30 encoder frames: past max_position_embeddings, so scaling kicks in
STEPS = 24  # decoder steps, also past max_position_embeddings


def build_pair(config: MoonshineConfig, seed: int = 0):
    """Our model and transformers' with the same random weights."""
    require_module("transformers")
    import transformers

    torch.manual_seed(seed)
    hf_config = transformers.MoonshineConfig(**config.to_hf_dict())
    hf = transformers.MoonshineForConditionalGeneration(hf_config).eval()
    with torch.no_grad():  # larger random weights make differences visible
        for p in hf.parameters():
            p.mul_(8.0)
    ours = Moonshine(config).eval()
    state = {
        hf_to_ours(k): v
        for k, v in hf.state_dict().items()
        if not (k == "proj_out.weight" and config.tie_word_embeddings)
    }
    ours.load_state_dict(state, strict=True)
    return ours, hf


def hf_step_logits(hf, encoder_states: torch.Tensor, tokens: list[int]) -> list[torch.Tensor]:
    """transformers' logits one token at a time with its own KV cache."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.models.moonshine.modeling_moonshine import MoonshineEncoderModelOutput

    encoder_outputs = MoonshineEncoderModelOutput(last_hidden_state=encoder_states)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    logits = []
    for token in tokens:
        out = hf(
            encoder_outputs=encoder_outputs,
            decoder_input_ids=torch.tensor([[token]]),
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        logits.append(out.logits[0, -1])
    return logits


def our_step_logits(
    model: Moonshine, features: torch.Tensor, tokens: list[int]
) -> list[torch.Tensor]:
    model.setup_caches(1, len(tokens) + 1, dtype=features.dtype)
    model.prefill_cross(features)
    return [
        model.decode_step(torch.tensor([[t]]), torch.tensor([pos]))[0, -1]
        for pos, t in enumerate(tokens)
    ]


def assert_parity(config: MoonshineConfig, tolerance: float = 1e-9) -> None:
    """Run both in float64, where the only differences left are implementation differences."""
    ours, hf = build_pair(config)
    ours, hf = ours.double(), hf.double()
    audio = torch.randn(1, AUDIO_SAMPLES, generator=torch.Generator().manual_seed(1)).double() * 0.2
    random_tokens = torch.randint(3, config.vocab_size, (STEPS - 1,)).tolist()
    tokens = [config.decoder_start_token_id, *random_tokens]
    with torch.no_grad():
        reference = hf.model.encoder(audio).last_hidden_state
        features, mask = ours.encode(audio)
        assert mask is None
        assert (
            features.shape == reference.shape == (1, num_frames(AUDIO_SAMPLES), config.hidden_size)
        )
        encoder_diff = (features - reference).abs().max().item()
        assert encoder_diff <= tolerance, f"encoder differs by {encoder_diff}"
        expected = hf_step_logits(hf, reference, tokens)
        actual = our_step_logits(ours, reference, tokens)
    for pos, (a, e) in enumerate(zip(actual, expected, strict=True)):
        diff = (a - e).abs().max().item()
        # our logits come out as float32 whatever the model dtype: allow float32 rounding
        bound = 2e-7 * max(1.0, e.abs().max().item())
        assert diff <= bound, f"logits differ by {diff} at step {pos}"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_parity_attention_layouts(layout: str) -> None:
    assert_parity(MoonshineConfig(**{**SMALL, **LAYOUTS[layout]}))


@pytest.mark.parametrize("rope", sorted(ROPE_SCALINGS))
def test_parity_rope_scaling(rope: str) -> None:
    config = MoonshineConfig(**SMALL, partial_rotary_factor=0.9, rope_scaling=ROPE_SCALINGS[rope])
    assert config.rope_type == rope
    assert_parity(config)


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_grouped_kv_heads_equal_repeated_full_heads(kv_heads: int) -> None:
    """GQA (2 K/V heads) and MQA (1) against MHA with each K/V head's weights repeated.

    transformers 5.x cannot be the reference here: its MoonshineAttention reshapes the queries
    with num_key_value_heads, so it fails on any GQA config.
    """
    grouped_config = MoonshineConfig(
        **SMALL, encoder_num_key_value_heads=kv_heads, decoder_num_key_value_heads=kv_heads
    )
    torch.manual_seed(0)
    grouped = Moonshine(grouped_config).eval()
    full = Moonshine(MoonshineConfig(**SMALL)).eval()
    repeat = SMALL["encoder_num_attention_heads"] // kv_heads
    head_dim = SMALL["hidden_size"] // SMALL["encoder_num_attention_heads"]
    state = {}
    for name, tensor in grouped.state_dict().items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            tensor = (
                tensor.unflatten(0, (kv_heads, head_dim)).repeat_interleave(repeat, 0).flatten(0, 1)
            )
        state[name] = tensor
    full.load_state_dict(state, strict=True)
    audio = torch.randn(1, AUDIO_SAMPLES) * 0.2
    tokens = [1, 17, 42, 99, 5]
    with torch.no_grad():
        features_grouped, _ = grouped.encode(audio)
        features_full, _ = full.encode(audio)
        torch.testing.assert_close(features_grouped, features_full, atol=1e-5, rtol=1e-5)
        for a, b in zip(
            our_step_logits(grouped, features_grouped, tokens),
            our_step_logits(full, features_grouped, tokens),
            strict=True,
        ):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_head_padding_is_a_numerical_no_op() -> None:
    config = MoonshineConfig(**{**SMALL, **LAYOUTS["padded-head"]})
    torch.manual_seed(0)
    model = Moonshine(config).eval()
    audio = torch.randn(1, 8000) * 0.2
    with torch.no_grad():
        plain, _ = model.encode(audio)
        for module in model.modules():
            if hasattr(module, "pad_heads"):
                assert module.head_dim_padding == 4  # 12 -> 16
                module.pad_heads = True
        padded, _ = model.encode(audio)
    torch.testing.assert_close(plain, padded, atol=1e-5, rtol=0)


def test_batched_encode_matches_single_rows() -> None:
    """Rows padded to a common length encode exactly as they would alone."""
    torch.manual_seed(0)
    model = Moonshine(MoonshineConfig(**SMALL)).eval()
    lengths = [9000, 4000, MIN_SAMPLES]
    audio = torch.zeros(3, max(lengths))
    for row, n in enumerate(lengths):
        audio[row, :n] = torch.randn(n) * 0.2
    with torch.no_grad():
        batched, mask = model.encode(audio, lengths)
        for row, n in enumerate(lengths):
            single, _ = model.encode(audio[row : row + 1, :n])
            frames = num_frames(n)
            assert int(mask[row].sum()) == frames
            torch.testing.assert_close(batched[row, :frames], single[0], atol=1e-5, rtol=1e-5)


def test_batched_decode_step_matches_single_rows() -> None:
    torch.manual_seed(0)
    model = Moonshine(MoonshineConfig(**SMALL)).eval()
    lengths = [9000, 3000]
    audio = torch.randn(2, 9000) * 0.2
    tokens = [1, 5, 9, 77, 3]
    with torch.no_grad():
        features, mask = model.encode(audio, lengths)
        model.setup_caches(2, 8)
        model.prefill_cross(features, mask)
        batched = [
            model.decode_step(torch.tensor([[t], [t]]), torch.tensor([pos]))[:, -1]
            for pos, t in enumerate(tokens)
        ]
        for row, n in enumerate(lengths):
            single_features, _ = model.encode(audio[row : row + 1, :n])
            single = our_step_logits(model, single_features, tokens)
            for b, s in zip(batched, single, strict=True):
                torch.testing.assert_close(b[row], s, atol=1e-4, rtol=1e-4)


def test_min_samples_is_the_shortest_accepted_input() -> None:
    model = Moonshine(MoonshineConfig(**SMALL)).eval()
    with torch.no_grad():
        assert model.encode(torch.zeros(1, MIN_SAMPLES))[0].shape[1] == num_frames(MIN_SAMPLES) == 1
        with pytest.raises(RuntimeError):
            model.encode(torch.zeros(1, MIN_SAMPLES - 64))


def test_key_map_round_trips_every_parameter() -> None:
    model = Moonshine(MoonshineConfig(**{**SMALL, "tie_word_embeddings": False}))
    for name in model.state_dict():
        assert hf_to_ours(ours_to_hf(name)) == name


@pytest.mark.parametrize(("head_dim", "factor"), [(52, 0.62), (20, 0.55), (16, 1.0), (21, 0.5)])
def test_rotary_is_bitwise_the_pairwise_rotation(head_dim: int, factor: float) -> None:
    """`x * cos + swapped * sin` with the full-width tables equals, bit for bit, rotating each
    pair (x1 cos - x2 sin, x2 cos + x1 sin) and passing the other dims through."""
    config = MoonshineConfig(**{**SMALL, "partial_rotary_factor": factor})
    rotary = RotaryEmbedding(config, head_dim)
    positions = torch.arange(37)
    cos, sin = rotary(positions)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 37, head_dim) * 10

    inv_freq = rotary.inv_freq
    angles = positions[:, None].float() * inv_freq[None, :]
    c, s = angles.cos() * rotary.attention_scaling, angles.sin() * rotary.attention_scaling
    rot = 2 * inv_freq.shape[0]
    x1, x2 = x[..., :rot].unflatten(-1, (-1, 2)).unbind(-1)
    pairs = torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).flatten(-2)
    expected = torch.cat((pairs, x[..., rot:]), dim=-1)

    assert cos.shape == sin.shape == (37, head_dim)
    assert torch.equal(apply_rotary(x, cos, sin), expected)


@pytest.mark.parametrize("bias", [False, True])
def test_fused_cross_kv_prefill_is_bitwise_the_per_layer_one(bias: bool) -> None:
    """One stacked product gives every layer's cross K/V exactly, and the layers' weights become
    views of the stacked weight (stored once), their values unchanged."""
    torch.manual_seed(0)
    model = Moonshine(MoonshineConfig(**{**SMALL, "attention_bias": bias})).eval()
    features = torch.randn(2, 13, SMALL["hidden_size"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.prefill_cross(features)
        per_layer = [(layer.cross_k, layer.cross_v) for layer in model.decoder.layers]
        model.fuse_cross_kv()
        assert model.cross_kv is not None and (model.cross_kv[1] is not None) == bias
        model.prefill_cross(features)
    for layer, (k, v) in zip(model.decoder.layers, per_layer, strict=True):
        assert torch.equal(layer.cross_k, k) and torch.equal(layer.cross_v, v)
        assert layer.cross_k.is_contiguous() and layer.cross_v.is_contiguous()
        weight = layer.cross_attn.k_proj.weight
        assert weight.untyped_storage().data_ptr() == model.cross_kv[0].untyped_storage().data_ptr()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
