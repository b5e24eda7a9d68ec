"""Exact int8-weight linears on AMX tiles: the encoder's matrix products and the cross K/V prefill.

Why: those products are float32 GEMMs, compute-bound at about 170-250 GFLOP/s on 2 cores, and they
are most of a short command's time. Intel's AMX tiles multiply int8 at many times that rate, and
every weight of the checkpoint is an int8 `q` with a zero point and a scale. The kernel
(`assets/amx_linear.cpp`) puts each row of activations on a 22-bit integer grid (as fine as the
row's largest value allows), splits those integers into three signed bytes, forms every product
exactly in int32 and combines the three sums in int64: the result is the float model's up to the
activations' 22-bit grid and one final rounding, closer to the exact product than float32's own
GEMM (tests/test_amx.py), and 1.5-3.8x faster than MKL on the encoder's shapes (2026-12-02;
the 2 s encoder 29.5 -> 20.6 ms, the 10 s one 126 -> 105 ms, in `benchmarks/transcribe.py`).

The kernel is compiled on the machine that runs it (`kernels.AMX_LIBRARY`, about 15 s, once) and
loaded as the torch op `moonshine_live::amx_linear`, which the encoder package calls. Without AMX,
a compiler or permission from the kernel, the float path runs instead.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..checkpoint.quantized import QuantizedTensor
from ..checkpoint.weights import Checkpoint, read_int8
from ..model.network import Moonshine
from . import kernels

_LOGGER = logging.getLogger(__name__)

BLOCK = 32
"""Outputs of an AMX linear come in multiples of this (the kernel's block of columns)."""
REQUIRED_FLAGS = kernels.AMX_LIBRARY.flags
_state: dict[str, bool] = {}
"""{"loaded": whether `load_kernels` succeeded}, once per process."""
_FAKE_REGISTERED: list[bool] = []
"""Non-empty once the op's fake is registered (torch refuses a second registration)."""


def cpu_has_amx() -> bool:
    """Whether this CPU has the tile and vector features the kernel uses (Linux x86-64 only)."""
    return kernels.supported(kernels.AMX_LIBRARY)


def library_path() -> Path:
    """Where the kernel built for this source, torch and CPU is kept."""
    return kernels.library_path(kernels.AMX_LIBRARY)


def load_kernels() -> bool:
    """Build (the first time) and load the op; False, with a warning, when it cannot run here."""
    if "loaded" in _state:
        return _state["loaded"]
    loaded = False
    if cpu_has_amx():
        try:
            kernels.load_or_build(kernels.AMX_LIBRARY, library_path())
            _register_fake()
            loaded = _works()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _LOGGER.warning("AMX kernels unavailable, the encoder runs float32 GEMMs: %s", exc)
    _state["loaded"] = loaded
    return loaded


def _register_fake() -> None:
    """Shapes for export (the encoder package): the op's output is x with N features."""
    if _FAKE_REGISTERED:
        return

    @torch.library.register_fake("moonshine_live::amx_linear")
    def _(x: Tensor, packed: Tensor, scales: Tensor, zero_points: Tensor, bias: Tensor | None,
          out_features: int) -> Tensor:  # fmt: skip
        return x.new_empty((*x.shape[:-1], out_features))

    _FAKE_REGISTERED.append(True)


def _works() -> bool:
    """One small product against float32: the OS may refuse the tile state (old kernels)."""
    q = torch.arange(BLOCK * BLOCK, dtype=torch.int32).remainder(255).sub(127).to(torch.int8)
    linear = AmxLinear.from_quantized([QuantizedTensor(q.view(BLOCK, BLOCK), 0.5, 3.0)])
    x = torch.linspace(-2, 2, 3 * BLOCK).view(3, BLOCK)
    expected = x @ ((q.view(BLOCK, BLOCK).float() - 3.0) * 0.5).T
    return bool(torch.allclose(linear(x), expected, rtol=1e-5, atol=1e-4))


class AmxLinear(nn.Module):
    """`y = x @ W.T + b` on AMX tiles, W kept as the checkpoint's int8 values (packed for the
    tiles) with a scale and zero point per output.

    Several int8 tensors can share one module (stacked along the outputs, each with its own scale
    and zero point): the cross K/V prefill is then one call.
    """

    def __init__(
        self, packed: Tensor, scales: Tensor, zero_points: Tensor, bias: Tensor | None,
        in_features: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_features, self.out_features = in_features, scales.numel()
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        self.register_buffer("zero_points", zero_points)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @classmethod
    def from_quantized(
        cls, weights: Sequence[QuantizedTensor], bias: Tensor | None = None
    ) -> AmxLinear:
        """From int8 weights [N_i, K...] (trailing dims flatten, as a conv's do), stacked."""
        flat = [w.q.flatten(1) for w in weights]
        pairs = list(zip(flat, weights, strict=True))
        packed = torch.cat([torch.ops.moonshine_live.amx_pack(q) for q in flat])
        scales = torch.cat([torch.full((q.shape[0],), w.scale) for q, w in pairs])
        zero_points = torch.cat([torch.full((q.shape[0],), w.zero_point) for q, w in pairs])
        return cls(packed, scales, zero_points, bias, flat[0].shape[1])

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:  # the packed weights are padded: say it here
            raise ValueError(f"AmxLinear: x has {x.shape[-1]} features, not {self.in_features}")
        return torch.ops.moonshine_live.amx_linear(
            x, self.packed, self.scales, self.zero_points, self.bias, self.out_features
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, amx"


class ConvAsLinear(nn.Module):
    """A conv (no padding or dilation) as a linear module over its windows (in `network.AudioStem`),
    for a linear kernel that is not `F.linear` (`AmxLinear`), which takes rows with a
    stride: its windows are laid out tap by tap (all channels of a tap together), so each is a
    slice of the time-major input and the window matrix is a view, not a copy (0.7 ms of the 2 s
    stem, 2026-12-02). Its weight must be flattened in that order: [C_out, K, C_in]."""

    def __init__(self, linear: nn.Module, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.linear = linear
        self.kernel_size, self.stride = (kernel_size,), (stride,)

    def forward(self, x: Tensor) -> Tensor:
        """Time-major x [B, T, C_in] -> [B, T', C_out]; the windows [B, T', K * C_in] are a view."""
        (kernel,), (stride,) = self.kernel_size, self.stride
        return self.linear(x.contiguous().unfold(1, kernel, stride).transpose(2, 3).flatten(2))


def in_use(model: nn.Module) -> bool:
    """Whether any of the model's products runs on AMX (a float checkpoint has nothing to swap)."""
    return any(isinstance(module, AmxLinear) for module in model.modules())


def fits(in_features: int, out_features: int) -> bool:
    return in_features > 0 and out_features % BLOCK == 0


def takes(name: str) -> bool:
    """Whether the int8 tensor of that name (ours) is one `use_amx` can run: the encoder's and
    the cross K/V projections'."""
    return (
        name.startswith("encoder.")
        or ".cross_attn.k_proj." in name
        or ".cross_attn.v_proj." in name
    )


def use_amx_from(model: Moonshine, checkpoint: Checkpoint) -> int:
    """`use_amx` with the checkpoint's own int8 tensors (after `load_kernels()` succeeded)."""
    swapped = use_amx(model, read_int8(checkpoint, takes))
    model.eval().requires_grad_(False)
    return swapped


def use_amx(model: Moonshine, quantized: Mapping[str, QuantizedTensor]) -> int:
    """Swap the encoder's linears, the stem's window products (conv2, conv3) and the fused cross
    K/V prefill for `AmxLinear`s built from the checkpoint's int8 tensors (our names); a part
    stored as float, or of a size the kernel does not take, stays as it is. Returns the count."""
    swapped = 0
    encoder = model.encoder
    for name, module in list(encoder.named_modules()):
        weight = quantized.get(f"encoder.{name}.weight")
        if (
            isinstance(module, nn.Linear)
            and weight is not None
            and fits(module.in_features, module.out_features)
        ):
            parent, _, attr = name.rpartition(".")
            linear = AmxLinear.from_quantized([weight], _float(module.bias))
            setattr(encoder.get_submodule(parent), attr, linear)
            swapped += 1
    stem = encoder.stem
    for attr in ("conv2", "conv3"):
        conv = getattr(stem, attr)
        weight = quantized.get(f"encoder.stem.{attr}.weight")
        inputs = conv.in_channels * conv.kernel_size[0]
        if weight is not None and fits(inputs, conv.out_channels):
            taps_major = QuantizedTensor(  # the order of `ConvAsLinear`'s windows
                weight.q.transpose(1, 2).contiguous(), weight.scale, weight.zero_point
            )
            linear = AmxLinear.from_quantized([taps_major], _float(conv.bias))
            setattr(stem, attr, ConvAsLinear(linear, conv.kernel_size[0], conv.stride[0]))
            swapped += 1
    swapped += _use_amx_cross_kv(model, quantized)
    return swapped


def _use_amx_cross_kv(model: Moonshine, quantized: Mapping[str, QuantizedTensor]) -> int:
    if model.cross_kv is None or model.cross_kv[1] is not None:
        return 0
    names = [
        f"decoder.layers.{i}.cross_attn.{projection}.weight"
        for i in range(len(model.decoder.layers))
        for projection in ("k_proj", "v_proj")
    ]  # the order `Moonshine.fuse_cross_kv` stacks them in
    weights = [quantized.get(name) for name in names]
    if any(w is None for w in weights):
        return 0
    stacked = [w for w in weights if w is not None]
    if not all(fits(w.shape[1], w.shape[0]) for w in stacked):  # each is packed on its own
        return 0
    model.cross_kv_linear = AmxLinear.from_quantized(stacked)
    return 1


def _float(bias: Tensor | None) -> Tensor | None:
    return None if bias is None else bias.detach().float().contiguous()
