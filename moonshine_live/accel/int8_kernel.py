"""The decode step's int8 linears on our C++ op `moonshine_live::int8_linear`.

Why: a decode step is bound by weight traffic (38.5 MB of int8 weights a token), and inductor's
fused dequantize-and-sum kernel reads them behind the hardware prefetcher, which stops at every
4 KB page. The op (`assets/int8_gemv.cpp`) asks for the weights a few pages ahead itself: steps
inside transcriptions went from 3.7-4.7 to 3.1 ms (2 s clip) and from 3.6-3.8 to 3.1-3.3 ms
(10 s clip), tokens unchanged (2026-12-02, 2-core Xeon, alternating processes). It comes with
the AMX library where that loads, else in a library of its own (AVX2 and FMA are enough).
"""

from __future__ import annotations

import logging
import subprocess

import torch
from torch import Tensor, nn

from ..checkpoint.quantized import Int8WeightLinear
from . import kernels
from .amx import load_kernels as load_amx_kernels

_LOGGER = logging.getLogger(__name__)

_state: dict[str, bool] = {}
"""{"loaded": whether `load_kernel` succeeded}, once per process."""


def load_kernel() -> bool:
    """Make the op available (building its library the first time); False, with a warning,
    when it cannot run here."""
    if "loaded" in _state:
        return _state["loaded"]
    if not kernels.has_op("int8_linear"):
        load_amx_kernels()  # the AMX library holds it too, and a process loads one of the two
    if not kernels.has_op("int8_linear") and kernels.supported(kernels.INT8_LIBRARY):
        library = kernels.INT8_LIBRARY
        try:
            kernels.load_or_build(library, kernels.library_path(library))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _LOGGER.warning("int8 kernel unavailable, decode steps run inductor's: %s", exc)
    loaded = kernels.has_op("int8_linear")
    if loaded:
        register_fake()
        loaded = _works()
    _state["loaded"] = loaded
    return loaded


def register_fake() -> None:
    """Shapes for export and `torch.compile`: x with N features (once per process)."""
    if _state.get("fake"):
        return

    @torch.library.register_fake("moonshine_live::int8_linear")
    def _(x: Tensor, q: Tensor, scale: float, zero_point: float, bias: Tensor | None) -> Tensor:
        return x.new_empty((*x.shape[:-1], q.shape[0]))

    _state["fake"] = True


def _works() -> bool:
    """One small product against float32."""
    q = torch.arange(40 * 37, dtype=torch.int32).remainder(255).sub(127).to(torch.int8)
    q = q.view(40, 37)
    x = torch.linspace(-2, 2, 3 * 37).view(3, 37)
    expected = x @ ((q.float() - 3.0) * 0.5).T
    got = torch.ops.moonshine_live.int8_linear(x, q, 0.5, 3.0, None)
    return bool(torch.allclose(got, expected, rtol=1e-5, atol=1e-4))


def use_int8_kernel(model: nn.Module) -> int:
    """Switch the model's `Int8WeightLinear`s (the decoder's, and its tied head) to the op, after
    `load_kernel()` succeeded. Returns the count."""
    linears = [module for module in model.modules() if isinstance(module, Int8WeightLinear)]
    for linear in linears:
        linear.kernel = True
    return len(linears)


def in_use(model: nn.Module) -> bool:
    return any(isinstance(m, Int8WeightLinear) and m.kernel for m in model.modules())
