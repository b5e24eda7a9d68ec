"""The AMX linears: exact products, any row count, stacked weights, clear errors, and the float
path when the kernels cannot run. Transcripts with them are checked in test_speed_paths.py (the
shared transcriber runs them on an AMX CPU).

AMX is a CPU feature, which nobody can install: wherever it is absent (CI included) the kernel
tests skip, and the fallback tests check that the float path runs instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import require_cpu
from safetensors.torch import save_file
from test_speed_paths import BECKETT_TOKENS
from torch import nn

from moonshine_live.accel import amx
from moonshine_live.asr.config import DecodeConfig
from moonshine_live.asr.transcriber import Transcriber
from moonshine_live.checkpoint.quantized import QuantizedTensor
from moonshine_live.checkpoint.weights import (
    Checkpoint,
    load_model,
    read_state_dict,
    resolve_checkpoint,
)
from moonshine_live.model.network import _conv_as_matmul


@pytest.fixture
def needs_amx() -> None:
    require_cpu("AMX tiles (amx_tile, amx_int8)", amx.cpu_has_amx())


def quantized(rows: int, cols: int, seed: int, scale: float = 0.5, zero_point: float = -3.0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(-128, 128, (rows, cols), generator=generator, dtype=torch.int8)
    return QuantizedTensor(q, scale, zero_point)


def float_weight(weight: QuantizedTensor) -> torch.Tensor:
    return (weight.q.double() - weight.zero_point) * weight.scale


@pytest.fixture
def kernels(needs_amx: None) -> None:
    assert amx.load_kernels(), "this CPU has AMX, so the kernels must build and load"


def on_grid(shape: tuple[int, ...], seed: int, largest: int = 50) -> torch.Tensor:
    """Integer activations whose rows peak at 64: on the kernel's 22-bit grid (64 / 2^22) every
    one is exact, so the only rounding left is the final float32 result."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(-largest, largest + 1, shape, generator=generator).float()
    x[..., 0] = 64.0
    return x


def test_products_are_exact(kernels):
    """Activations on the grid, a power-of-two scale, integer bias: every sum is exact, so the
    result is the float64 product rounded once, whatever the order of the sums."""
    weight = quantized(96, 416, seed=1)
    bias = torch.arange(96, dtype=torch.float32) - 40
    linear = amx.AmxLinear.from_quantized([weight], bias)
    x = on_grid((3, 41, 416), seed=2)
    expected = torch.nn.functional.linear(x.double(), float_weight(weight), bias.double())
    assert torch.equal(linear(x), expected.float())


@pytest.mark.parametrize("rows", [1, 7, 32, 33, 82, 415])
def test_real_activations_match_float32(kernels, rows):
    """Real-valued activations on each row's 22-bit grid: no further from the float64 result
    than float32's own GEMM is (plus a hair)."""
    weight = quantized(416, 1664, seed=3, scale=0.0123, zero_point=7.0)
    linear = amx.AmxLinear.from_quantized([weight])
    x = torch.randn(rows, 1664, generator=torch.Generator().manual_seed(rows))
    exact = x.double() @ float_weight(weight).T
    ours_error = (linear(x).double() - exact).abs().max()
    float32_error = (x @ float_weight(weight).float().T - exact).abs().max()
    assert ours_error <= 2 * float32_error + 1e-6


def test_stacked_weights_keep_their_own_scales(kernels):
    """The cross K/V form: several int8 tensors, each with its own scale and zero point."""
    parts = [quantized(64, 416, seed=4, scale=0.25), quantized(32, 416, seed=5, zero_point=11.0)]
    stacked = amx.AmxLinear.from_quantized(parts)
    x = on_grid((5, 416), seed=6, largest=20)
    expected = torch.cat([x.double() @ float_weight(p).T for p in parts], dim=-1)
    assert stacked.out_features == 96
    assert torch.equal(stacked(x), expected.float())


def test_conv_weights_flatten_like_the_windows(kernels):
    weight = QuantizedTensor(quantized(32, 3 * 60, seed=7).q.view(32, 60, 3), 1.0, 2.0)
    linear = amx.AmxLinear.from_quantized([weight])
    x = on_grid((4, 180), seed=8, largest=9)
    flat = (weight.q.double().flatten(1) - 2.0) * 1.0
    assert linear.in_features == 180  # not a multiple of the kernel's 64: padded
    assert torch.equal(linear(x), (x.double() @ flat.T).float())


def test_bad_sizes_name_the_problem(kernels):
    with pytest.raises(RuntimeError, match="multiples of 32"):
        torch.ops.moonshine_live.amx_pack(torch.zeros(40, 416, dtype=torch.int8))
    linear = amx.AmxLinear.from_quantized([quantized(32, 416, seed=9)])
    with pytest.raises(RuntimeError, match="packed weight does not fit x"):
        torch.ops.moonshine_live.amx_linear(
            torch.zeros(2, 384), linear.packed, linear.scales, linear.zero_points, None, 32
        )
    with pytest.raises(ValueError, match="x has 400 features, not 416"):
        linear(torch.zeros(2, 400))  # pads to the same 448 as 416: only the module can tell
    with pytest.raises(RuntimeError, match="float32"):
        linear(torch.zeros(2, 416, dtype=torch.float64))
    assert linear(torch.zeros(0, 416)).shape == (0, 32)


def test_transcriber_runs_the_encoder_on_amx(needs_amx, transcriber):
    model = transcriber.model
    assert transcriber.amx
    assert isinstance(model.encoder.layers[0].mlp.fc1, amx.AmxLinear)
    assert isinstance(model.encoder.stem.conv2.linear, amx.AmxLinear)
    assert isinstance(model.cross_kv_linear, amx.AmxLinear)
    assert transcriber._encoder_layers.artifact.name.startswith("encoder-amx-")


def test_without_amx_the_float_encoder_runs(monkeypatch):
    """No AMX (or no compiler): the same engine with float32 GEMMs, said once in the log."""
    monkeypatch.setattr(amx, "_state", {})
    monkeypatch.setattr(amx, "cpu_has_amx", lambda: False)
    fallback = Transcriber(DecodeConfig(compile=True), warm_up=False)
    assert not fallback.amx
    assert type(fallback.model.encoder.layers[0].mlp.fc1) is nn.Linear
    assert fallback.model.cross_kv_linear is None


def test_the_shared_transcriber_runs_amx_exactly_when_the_cpu_has_it(transcriber):
    """On every machine: the engine's transcriber takes the AMX path on a CPU with AMX tiles
    and the float32 encoder everywhere else (this is what CI on an AVX2-only CPU runs)."""
    has_amx = amx.cpu_has_amx()
    assert transcriber.amx == has_amx
    fc1 = transcriber.model.encoder.layers[0].mlp.fc1
    assert isinstance(fc1, amx.AmxLinear) if has_amx else type(fc1) is nn.Linear
    assert (transcriber.model.cross_kv_linear is not None) == has_amx


WITHOUT_AMX = """
import sys, torch
from torch import nn
from moonshine_live.accel import amx, kernels
from moonshine_live.capture.audio import load_audio
from moonshine_live.asr.config import DecodeConfig
from moonshine_live.model.decoding import decode_step
from moonshine_live.checkpoint.quantized import Int8WeightLinear
from moonshine_live.asr.transcriber import Transcriber
amx.cpu_has_amx = lambda: False  # no-op on a CPU without AMX; pretended on one with it
transcriber = Transcriber(DecodeConfig(compile=True), warm_up=False)
model = transcriber.model
linears = [m for m in model.modules() if isinstance(m, Int8WeightLinear)]
assert not transcriber.amx and not kernels.has_op("amx_linear"), "AMX ran"
assert type(model.encoder.layers[0].mlp.fc1) is nn.Linear and model.cross_kv_linear is None
assert transcriber.int8_kernel and linears and all(m.kernel for m in linears), "no int8 op"
assert transcriber._step.artifact.name.startswith("decode-step-kernels-")
# the same weights stepped eagerly (no package to build on a CPU with AMX): every int8 linear
# calls the op, and the tokens are the float model's
transcriber._step, transcriber._encoder_layers = decode_step, None
def profiled(audio):  # the profiler sees its own thread: run it where the transcriber works
    with torch.profiler.profile() as profile:
        return transcriber.transcribe(audio).tokens, profile
tokens, profile = transcriber.on_compute_thread(profiled, load_audio(sys.argv[1]))
calls = sum(e.count for e in profile.key_averages() if e.key == "moonshine_live::int8_linear")
print(list(tokens))
print(calls, len(linears))
"""


def test_without_amx_the_encoder_is_float32_and_the_decode_step_runs_the_int8_op(beckett_path):
    """On every machine, in a fresh process (a process loads one op library): a CPU without AMX
    gets float32 encoder GEMMs and the AVX2/AVX-512 int8 op in the decode step, with the float
    model's tokens for beckett.wav."""
    from moonshine_live.accel import kernels

    require_cpu("AVX2 and FMA", kernels.supported(kernels.INT8_LIBRARY))
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_AMX, str(beckett_path)],
        capture_output=True, text=True, env=dict(os.environ), timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    tokens, counts = done.stdout.strip().splitlines()[-2:]
    calls, linears = (int(n) for n in counts.split())
    assert calls >= linears * len(json.loads(tokens))  # every linear on every step
    assert tuple(json.loads(tokens)) == BECKETT_TOKENS


def test_a_failed_build_keeps_the_float_path(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(amx, "_state", {})
    monkeypatch.setattr(amx, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(amx, "library_path", lambda: tmp_path / "amx.so")
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="moonshine_live.accel.amx"):
        assert not amx.load_kernels()
    assert "AMX kernels unavailable" in caplog.text
    assert not (tmp_path / "amx.so").exists()


def with_amx(model: nn.Module, checkpoint: Checkpoint) -> nn.Module:
    amx.use_amx_from(model, checkpoint)
    return model


def test_a_float_checkpoint_has_nothing_to_swap(kernels, tmp_path):
    """AMX runs the checkpoint's own int8 tensors; a float32 checkpoint keeps float GEMMs and
    says so (`in_use`, hence the `ready` event's `amx`)."""
    source = resolve_checkpoint(None)
    assert amx.in_use(with_amx(load_model(source), source))
    float_dir = tmp_path / "float"
    float_dir.mkdir()
    state = read_state_dict(source.weights_path)
    save_file({k: v.contiguous() for k, v in state.items() if k != "proj_out.weight"},
              str(float_dir / "model.safetensors"))  # fmt: skip
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(source.directory / name, float_dir / name)
    float_checkpoint = resolve_checkpoint(float_dir)
    model = with_amx(load_model(float_checkpoint), float_checkpoint)
    assert not amx.in_use(model)
    assert type(model.encoder.layers[0].mlp.fc1) is nn.Linear


def test_conv_windows_as_a_view_give_the_copied_windows_result(kernels):
    """The stem's convs read their windows tap by tap from a view of the input (overlapping
    rows, no copy). Integer sums are exact in any order, so the result is bit for bit that of the
    channel-major windows copied out, as `F.linear` takes them."""
    conv = torch.nn.Conv1d(64, 32, 7, stride=3)
    weight = QuantizedTensor(quantized(32, 64 * 7, seed=10).q.view(32, 64, 7), 0.01, 4.0)
    taps_major = QuantizedTensor(weight.q.transpose(1, 2).contiguous(), 0.01, 4.0)
    as_linear = amx.ConvAsLinear(amx.AmxLinear.from_quantized([taps_major]), 7, 3)
    x = torch.randn(1, 100, 64, generator=torch.Generator().manual_seed(11))
    copied = x.unfold(1, 7, 3).flatten(2).contiguous()  # [1, 32, 64 * 7], channel-major
    expected = amx.AmxLinear.from_quantized([weight])(copied)
    assert torch.equal(_conv_as_matmul(x, as_linear), expected)
    assert _conv_as_matmul(x, conv).shape == expected.shape  # the float conv's windows
    float_result = torch.nn.functional.linear(copied.double(), float_weight(weight).flatten(1))
    assert torch.allclose(expected.double(), float_result, rtol=1e-5, atol=1e-4)


def test_rows_with_gaps_are_read_in_place(kernels):
    linear = amx.AmxLinear.from_quantized([quantized(32, 416, seed=12)])
    wide = torch.randn(9, 500, generator=torch.Generator().manual_seed(13))
    assert torch.equal(linear(wide[:, :416]), linear(wide[:, :416].contiguous()))


def test_a_damaged_kernel_library_is_rebuilt(needs_amx, tmp_path):
    """A truncated file in the cache: rebuilt and loaded, in a fresh process (a process loads
    the op's library once)."""
    cache = tmp_path / "cache"
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING)\n"
        "from moonshine_live.accel import amx\n"
        "path = amx.library_path(); path.parent.mkdir(parents=True, exist_ok=True)\n"
        "path.write_bytes(b'not a library')\n"
        "sys.exit(0 if amx.load_kernels() and path.stat().st_size > 10000 else 1)\n"
    )
    env = {**os.environ, "MOONSHINE_LIVE_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rebuilding the amx-linear kernels" in done.stderr
