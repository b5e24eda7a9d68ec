"""The opt-in speed paths: int8 weights give the fp32 tokens, bad settings are refused early.

int8 (`DecodeConfig(weights="int8")`) packs the checkpoint's own int8 weights, so only the 7-bit
activation rounding differs from fp32; transcripts may differ on a rare clip, never on most.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from speech import command_clips

from moonshine_live.audio import load_audio
from moonshine_live.config import DecodeConfig
from moonshine_live.errors import ConfigError
from moonshine_live.quantized import Int8Linear, affine_params
from moonshine_live.transcriber import Transcriber

CLIP_COUNT = 24
MIN_SAME_FRACTION = 0.95


@pytest.fixture(scope="module")
def fp32() -> Transcriber:
    return Transcriber(DecodeConfig(), warm_up=False)


@pytest.fixture(scope="module")
def int8() -> Transcriber:
    return Transcriber(DecodeConfig(weights="int8"), warm_up=False)


def test_weights_setting_is_validated():
    assert DecodeConfig().weights == "float"
    with pytest.raises(ConfigError, match=r"DecodeConfig\.weights"):
        DecodeConfig(weights="int4")


def test_int8_needs_cpu_float32():
    with pytest.raises(ConfigError, match=r"DecodeConfig\.weights"):
        Transcriber(DecodeConfig(weights="int8", device="cpu", dtype="bfloat16"), warm_up=False)


def test_int8_linear_matches_float_linear():
    """Exact affine weights pack losslessly; outputs differ only by activation rounding."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randint(-100, 100, (64, 32), generator=generator, dtype=torch.int8)
    weight, bias = (q.float() - 3) * 0.01, torch.randn(64, generator=generator)
    assert affine_params(weight, (0.01, 3.0)) == (0.01, 3)
    assert affine_params(weight, (0.02, 3.0))[1] == 0  # parameters that don't fit: symmetric
    x = torch.randn(2, 5, 32, generator=generator)
    expected = torch.nn.functional.linear(x, weight, bias)
    got = Int8Linear(weight, bias, 0.01, 3)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=0.05 * float(expected.abs().max()), rtol=0)


@pytest.mark.needs_weights
def test_int8_model_uses_int8_kernels(int8: Transcriber):
    model = int8.model
    layer = model.decoder.layers[0]
    for module in (layer.cross_attn.q_proj, layer.cross_attn.o_proj, layer.mlp.fc1, model.head):
        assert isinstance(module, Int8Linear)
    for module in (layer.attn.q_proj, layer.mlp.fc2, layer.cross_attn.k_proj):
        assert isinstance(module, torch.nn.Linear)  # kept float by measurement (weights.py)
    assert isinstance(model.decoder.embed_tokens, torch.nn.Embedding)  # lookup stays float


@pytest.mark.needs_weights
def test_int8_beckett_tokens_match_fp32(fp32: Transcriber, int8: Transcriber, beckett_path):
    audio = load_audio(beckett_path)
    assert int8.transcribe(audio).tokens == fp32.transcribe(audio).tokens


@pytest.mark.needs_weights
@pytest.mark.needs_tts
@pytest.mark.slow
def test_int8_command_clips_mostly_match_fp32(fp32: Transcriber, int8: Transcriber):
    differing = []
    for phrase, path in command_clips(CLIP_COUNT):
        audio = load_audio(path)
        ours, reference = int8.transcribe(audio), fp32.transcribe(audio)
        if ours.tokens != reference.tokens:
            differing.append(
                f"{path.name} ({phrase!r}): int8 {ours.text!r}, fp32 {reference.text!r}"
            )

    assert len(differing) <= (1 - MIN_SAME_FRACTION) * CLIP_COUNT, "\n".join(differing)
    print(f"{CLIP_COUNT - len(differing)}/{CLIP_COUNT} clips identical; differing: {differing}")


@pytest.mark.needs_weights
@pytest.mark.slow
@pytest.mark.parametrize("weights", ["float", "int8"])
def test_compiled_step_matches_eager(weights: str, fp32: Transcriber, int8: Transcriber):
    """`torch.compile(decode_step, fullgraph=True)` gives the eager logits (about 1 min each)."""
    from moonshine_live.decoding import _ensure_caches, decode_step

    model = (fp32 if weights == "float" else int8).model
    compiled = torch.compile(decode_step, fullgraph=True, dynamic=False)
    audio = torch.from_numpy(np.random.default_rng(0).normal(0, 0.01, 16000).astype(np.float32))
    with torch.inference_mode():
        features, _ = model.encode(audio[None])
        _ensure_caches(model, 1, 8)
        model.prefill_cross(features)
        token = torch.tensor([[1]])
        for pos in range(3):  # both write (nearly) the same K/V at pos, so they stay in step
            eager = decode_step(model, token, torch.tensor([pos]))
            got = compiled(model, token, torch.tensor([pos]))
            torch.testing.assert_close(got, eager, atol=1e-3, rtol=1e-4)
            token = eager.argmax(-1)[:, None]
