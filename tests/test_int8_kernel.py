"""The decode step's int8 linears on our op: exact sums, any batch, clear errors, the AVX2 build
(for CPUs without AVX-512) and the transcriber's use of it. Transcripts with it are checked in
test_speed_paths.py (the shared transcriber runs it).

The op needs an x86-64 CPU with AVX2 and FMA, a CPU feature: elsewhere these tests skip, CI
included, and inductor's kernels are what that machine tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import require_cpu

from moonshine_live.accel import int8_kernel, kernels
from moonshine_live.asr.config import DecodeConfig
from moonshine_live.asr.transcriber import Transcriber
from moonshine_live.checkpoint.quantized import Int8WeightLinear, QuantizedTensor


@pytest.fixture
def kernel() -> None:
    require_cpu("AVX2 and FMA", kernels.supported(kernels.INT8_LIBRARY))
    assert int8_kernel.load_kernel(), "this CPU has AVX2 and FMA, so the op must build and load"


def quantized(rows: int, cols: int, seed: int, scale: float, zero_point: float):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(-128, 128, (rows, cols), generator=generator, dtype=torch.int8)
    return QuantizedTensor(q, scale, zero_point)


def float_weight(weight: QuantizedTensor) -> torch.Tensor:
    return (weight.q.double() - weight.zero_point) * weight.scale


def integers(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-50, 51, shape, generator=generator).float()


@pytest.mark.parametrize("rows", range(1, 10))
def test_sums_are_exact_on_integers(kernel, rows):
    """Integer activations, a power-of-two scale, an integer zero point and bias: every sum is
    exact in float32, so the op equals the float64 product. Odd sizes exercise the tails; every
    count of rows up to one past a pass, each way the op tiles them (a beam's hypotheses)."""
    weight = quantized(1003, 417, seed=1, scale=0.125, zero_point=5.0)
    bias = torch.arange(1003, dtype=torch.float32) - 500
    x = integers((rows, 417), seed=2)
    expected = torch.nn.functional.linear(x.double(), float_weight(weight), bias.double())
    got = torch.ops.moonshine_live.int8_linear(x, weight.q, 0.125, 5.0, bias)
    assert torch.equal(got, expected.float())


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 9])
def test_real_activations_match_float32(kernel, rows):
    """Real activations, any batch (more rows than the op keeps in one pass, too): no further
    from the float64 result than float32's own product is (plus a hair)."""
    weight = quantized(3328, 416, seed=3, scale=0.0123, zero_point=-6.0)
    linear = Int8WeightLinear(weight.q, weight.scale, weight.zero_point)
    linear.kernel = True
    x = torch.randn(rows, 1, 416, generator=torch.Generator().manual_seed(rows))
    exact = x.double() @ float_weight(weight).T
    ours = linear(x)
    float32_error = (x @ float_weight(weight).float().T - exact).abs().max()
    assert ours.shape == (rows, 1, 3328)
    assert (ours.double() - exact).abs().max() <= 2 * float32_error + 1e-6


def test_bad_input_names_the_problem(kernel):
    q = quantized(32, 416, seed=4, scale=1.0, zero_point=0.0).q
    op = torch.ops.moonshine_live.int8_linear
    with pytest.raises(RuntimeError, match="disagree on the input features"):
        op(torch.zeros(1, 400), q, 1.0, 0.0, None)
    with pytest.raises(RuntimeError, match="contiguous 2-d int8"):
        op(torch.zeros(1, 32), q.T, 1.0, 0.0, None)
    with pytest.raises(RuntimeError, match="float32"):
        op(torch.zeros(1, 416).double(), q, 1.0, 0.0, None)
    with pytest.raises(RuntimeError, match="bias must be float32"):
        op(torch.zeros(1, 416), q, 1.0, 0.0, torch.zeros(5))


def test_the_avx2_build_gives_the_same_sums(kernel, tmp_path):
    """CPUs without AVX-512 get the kernel's AVX2 code: built here for a Haswell and run in a
    fresh process (a process loads one library of the op). Exact sums must be exact there too."""
    code = textwrap.dedent(
        f"""
        import sys, torch
        from pathlib import Path
        from moonshine_live.accel import kernels
        path = Path({str(tmp_path / "int8-avx2.so")!r})
        kernels.build(kernels.INT8_LIBRARY, path, arch="haswell")
        torch.ops.load_library(str(path))
        g = torch.Generator().manual_seed(5)
        q = torch.randint(-128, 128, (1003, 417), generator=g, dtype=torch.int8)
        x = torch.randint(-50, 51, (9, 417), generator=g).float()
        bias = torch.arange(1003, dtype=torch.float32) - 500
        w = (q.double() - 5.0) * 0.125
        expected = torch.nn.functional.linear(x.double(), w, bias.double()).float()
        got = torch.ops.moonshine_live.int8_linear(x, q, 0.125, 5.0, bias)
        sys.exit(0 if torch.equal(got, expected) else 1)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    disassembly = subprocess.run(["objdump", "-d", str(tmp_path / "int8-avx2.so")],
                                 capture_output=True, text=True)  # fmt: skip
    if disassembly.returncode == 0:  # binutils is there on any machine with g++
        assert "zmm" not in disassembly.stdout  # really the AVX2 code, not AVX-512


def test_without_amx_the_op_comes_in_its_own_library(kernel, tmp_path):
    """A CPU without AMX (pretended, in a fresh process with an empty cache): the op's own
    library is built and loaded, and the AMX one is not."""
    code = textwrap.dedent(
        """
        import sys
        from moonshine_live.accel import amx, int8_kernel, kernels
        amx.cpu_has_amx = lambda: False
        ok = int8_kernel.load_kernel() and not amx.load_kernels()
        ok = ok and kernels.library_path(kernels.INT8_LIBRARY).is_file()
        ok = ok and not kernels.library_path(kernels.AMX_LIBRARY).exists()
        sys.exit(0 if ok else 1)
        """
    )
    env = {**os.environ, "MOONSHINE_LIVE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "compiling the int8-linear kernels" in done.stderr


def test_a_failed_build_leaves_the_decode_to_inductor(kernel, tmp_path):
    """No compiler (in a fresh process, no AMX pretended): one warning, and no op."""
    code = textwrap.dedent(
        """
        import sys
        from moonshine_live.accel import amx, int8_kernel, kernels
        amx.cpu_has_amx = lambda: False
        ok = not int8_kernel.load_kernel() and not kernels.has_op("int8_linear")
        sys.exit(0 if ok else 1)
        """
    )
    env = {
        **os.environ,
        "MOONSHINE_LIVE_CACHE": str(tmp_path / "cache"),
        "CXX": str(tmp_path / "no-such-compiler"),
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "int8 kernel unavailable, decode steps run inductor's" in done.stderr


def test_transcriber_runs_decode_linears_on_the_op(kernel, transcriber):
    model = transcriber.model
    linears = [m for m in model.modules() if isinstance(m, Int8WeightLinear)]
    assert transcriber.int8_kernel
    assert len(linears) == 8 * 8 + 1  # eight linears a layer, and the tied head
    assert all(linear.kernel for linear in linears)
    assert transcriber._step.artifact.name.startswith("decode-step-kernels-")


def test_without_the_op_inductor_runs_the_decode_linears(monkeypatch):
    """No op (no compiler, another CPU): the same engine with inductor's kernels, whose
    package has a name of its own (a package that calls the op needs the op)."""
    monkeypatch.setattr(int8_kernel, "_state", {"loaded": False})
    fallback = Transcriber(DecodeConfig(compile=True), warm_up=False)
    assert not fallback.int8_kernel
    linears = [m for m in fallback.model.modules() if isinstance(m, Int8WeightLinear)]
    assert linears and not any(linear.kernel for linear in linears)
    name = fallback._step.artifact.name
    assert name.startswith("decode-step-") and not name.startswith("decode-step-kernels-")
