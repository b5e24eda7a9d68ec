"""Int8 weights with per-tensor scale and zero point, and their flat safetensors form.

Moonshine's shipped weights are exactly int8 plus two floats per tensor, so the checkpoint keeps
them that way (62 MB instead of 246 MB) and dequantizes on load. Torch only: loading a checkpoint
never needs the `.ort` reader.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import WeightsError

TIED_PARAMETERS: Mapping[str, str] = {"proj_out.weight": "model.decoder.embed_tokens.weight"}
"""Parameters with no source of their own: the output head reuses the token embedding."""
SCALE_SUFFIX = "_scale"
ZERO_POINT_SUFFIX = "_zero_point"
"""Flat-dict siblings of an int8 `<module>.weight`: `<module>.weight_scale` and `..._zero_point`.
(`<module>.weight.scale` would collide with module paths when loading.)"""


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """An int8 weight with its per-tensor affine parameters: `w = (q - zero_point) * scale`.

    `eq=False` because comparing tensors field by field has no single truth value.
    """

    q: torch.Tensor
    scale: float
    zero_point: float

    def __post_init__(self) -> None:
        if self.q.dtype != torch.int8:
            raise ValueError(f"QuantizedTensor.q must be int8, got {self.q.dtype}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"QuantizedTensor.scale must be finite and > 0, got {self.scale}")

    @property
    def shape(self) -> torch.Size:
        return self.q.shape

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Float weights; computed in float32 (exact up to one rounding), then cast."""
        return dequantize_int8(self.q, self.zero_point, self.scale).to(dtype)


def dequantize_int8(q: torch.Tensor, zero_point: float, scale: float) -> torch.Tensor:
    """`(q - zero_point) * scale` in float32: the one formula every int8 reader uses, so weights
    dequantized at load time, inside a compiled kernel or row by row are bit-identical."""
    return (q.to(torch.float32) - zero_point) * scale


Weights = dict[str, torch.Tensor | QuantizedTensor]


def to_safetensors_dict(
    weights: Mapping[str, torch.Tensor | QuantizedTensor],
) -> dict[str, torch.Tensor]:
    """One tensor per key: int8 `P` plus float32 0-d `P_scale` and `P_zero_point` siblings."""
    flat: dict[str, torch.Tensor] = {}
    for name, value in weights.items():
        if isinstance(value, QuantizedTensor):
            flat[name] = value.q.contiguous()
            flat[name + SCALE_SUFFIX] = torch.tensor(value.scale, dtype=torch.float32)
            flat[name + ZERO_POINT_SUFFIX] = torch.tensor(value.zero_point, dtype=torch.float32)
        else:
            flat[name] = value.contiguous()
    return flat


def dequantize_state_dict(
    flat: Mapping[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    source: str | Path = "state dict",
) -> dict[str, torch.Tensor]:
    """Plain float tensors for `load_state_dict`, with the tied `proj_out.weight` filled in.

    Accepts the output of `to_safetensors_dict` or a plain fp32 Hugging Face state dict.
    `source` (usually the file it was loaded from) is named in errors.
    """
    quantized = {name for name, tensor in flat.items() if tensor.dtype == torch.int8}
    siblings = {name + suffix for name in quantized for suffix in (SCALE_SUFFIX, ZERO_POINT_SUFFIX)}
    _check_siblings(flat, quantized, siblings, source)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in flat.items():
        if name in siblings:
            continue
        if name in quantized:
            state[name] = _flat_quantized(flat, name).dequantize(dtype)
        else:
            state[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    for tied, owner in TIED_PARAMETERS.items():
        if tied not in state and owner in state:
            state[tied] = state[owner]
    return state


def _check_siblings(
    flat: Mapping[str, torch.Tensor], quantized: set[str], siblings: set[str], source: str | Path
) -> None:
    suffixes = (SCALE_SUFFIX, ZERO_POINT_SUFFIX)
    orphans = {n for n in flat.keys() - siblings - quantized if n.endswith(suffixes)}
    problems = {"missing": siblings - flat.keys(), "not next to an int8 tensor": orphans}
    _raise_if_any(source, "int8 scales and zero points", problems)


def _flat_quantized(flat: Mapping[str, torch.Tensor], name: str) -> QuantizedTensor:
    return QuantizedTensor(
        q=flat[name],
        scale=float(flat[name + SCALE_SUFFIX].reshape(())),
        zero_point=float(flat[name + ZERO_POINT_SUFFIX].reshape(())),
    )


def _raise_if_any(source: str | Path, what: str, problems: Mapping[str, Iterable[str]]) -> None:
    """One `WeightsError` naming the source and every offending name, grouped by problem."""
    parts = [
        (f"{label} " if label else "") + _name_list(sorted(names))
        for label, names in problems.items()
        if names
    ]
    if parts:
        raise WeightsError(f"{source}: {what}: {'; '.join(parts)}")


def _name_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} (+{len(names) - limit} more)"


# -- int8 weights at run time -------------------------------------------------------------------


class Int8WeightLinear(torch.nn.Module):
    """`y = x @ W.T + b` with W kept as the int8 values: `W = (q - zero_point) * scale`.

    Weight-only: activations and arithmetic stay float32, and W is rebuilt by `dequantize_int8`,
    the function the float model's weights come from, so the weights are bit-identical to the float
    model's. Under `torch.compile` on CPU the product is written as a multiply-and-sum, which
    inductor fuses with the dequantization into one reduction kernel that reads one byte per weight
    (a decoder step is bound by weight traffic: 4x less of it). Eager falls back to dequantize +
    `F.linear`, correct but slow, so int8 weights belong with a compiled decode step. With
    `kernel` set (`int8_kernel.use_int8_kernel`, once the op loaded) every call, compiled or
    eager, is the `moonshine_live::int8_linear` op instead, which prefetches the weights it
    streams.
    """

    kernel: bool = False

    def __init__(
        self, q: torch.Tensor, scale: float, zero_point: float, bias: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        if q.dtype != torch.int8 or q.dim() != 2:
            raise ValueError(f"Int8WeightLinear needs a 2-d int8 weight, got {q.dtype} {q.dim()}-d")
        self.register_buffer("q", q)
        self.scale, self.zero_point = float(scale), float(zero_point)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        self.out_features, self.in_features = q.shape

    def weight(self) -> torch.Tensor:
        """The float32 weight, exactly as the float model holds it."""
        return dequantize_int8(self.q, self.zero_point, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel and x.device.type == "cpu" and x.dtype == torch.float32:
            return torch.ops.moonshine_live.int8_linear(
                x, self.q, self.scale, self.zero_point, self.bias
            )
        if torch.compiler.is_compiling() and x.device.type == "cpu":
            y = (_stored(x).unsqueeze(-2) * self.weight()).sum(-1)
        else:
            y = torch.nn.functional.linear(x, self.weight())
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _stored(x: torch.Tensor) -> torch.Tensor:
    """`x` written to memory once before a compiled reduction reads it, instead of recomputed.

    Inductor inlines a cheap elementwise producer (a layer norm's scale and shift) into each
    consumer: inside a matrix-vector product that means once per output row, which made the
    32768-row head 1.4x slower (1.39 vs 0.96 ms, 2026-12-01). Its stride-order prim makes it
    store the producer's result; outside inductor the prim is a no-op.
    """
    force = getattr(torch.ops.prims, "inductor_force_stride_order", None)
    return x if force is None else force(x, x.stride())


class Int8Embedding(torch.nn.Module):
    """Token lookup from an int8 table (the tied head's), dequantized row by row, exactly."""

    def __init__(self, table: Int8WeightLinear) -> None:
        super().__init__()
        self.table = table

    @property
    def weight(self) -> torch.Tensor:
        return self.table.weight()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return dequantize_int8(self.table.q[tokens], self.table.zero_point, self.table.scale)


def read_quantized(flat: Mapping[str, torch.Tensor]) -> dict[str, QuantizedTensor]:
    """{int8 tensor name: QuantizedTensor} from a flat safetensors dict."""
    return {
        name: _flat_quantized(flat, name)
        for name, tensor in flat.items()
        if tensor.dtype == torch.int8
    }
