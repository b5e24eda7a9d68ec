"""Int8 weights with per-tensor scale and zero point, and their flat safetensors form.

Moonshine's shipped weights are exactly int8 plus two floats per tensor, so the checkpoint keeps
them that way (62 MB instead of 246 MB) and dequantizes on load. Torch only: loading a checkpoint
never needs the `.ort` reader.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import WeightsError

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
        weight = (self.q.to(torch.float32) - self.zero_point) * self.scale
        return weight.to(dtype)


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


# -- int8 kernels on CPU -------------------------------------------------------------------------

INT8_PARTS = ("decoder", "self_attn", "cross_q_o", "fc1", "fc2", "head", "cross_kv", "encoder")
"""Where `quantize_linears` may put int8 kernels: "decoder" is the per-step linears (self q/k/v/o,
cross q/o, MLP fc1/fc2, also nameable one group at a time), then the output head, the
per-utterance cross-attention k/v and the encoder's linears."""


_PACKED: dict[int, tuple[object, int]] = {}
"""Packed weights and output width by handle: `torch.compile` cannot trace fbgemm's packed-weight
object, so compiled code reaches the kernel through the `int8_linear` custom op and a handle."""


@torch.library.custom_op("moonshine_live::int8_linear", mutates_args=())
def int8_linear(x: torch.Tensor, handle: int) -> torch.Tensor:
    """`Int8Linear` number `handle` applied to x (the form `torch.compile` sees)."""
    return torch.ops.quantized.linear_dynamic(x, _PACKED[handle][0], True)


@int8_linear.register_fake
def _int8_linear_shape(x: torch.Tensor, handle: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], _PACKED[handle][1]))


class Int8Linear(torch.nn.Module):
    """`y = x @ W.T + b` with W int8 (per-tensor affine) on fbgemm's dynamic-quantized kernel.

    The weight is packed EXACTLY from the checkpoint's int8 values, so only the activations are
    rounded: each call quantizes x per tensor to 7 bits (`reduce_range=True`: without VNNI,
    fbgemm's u8 x s8 pair sums saturate int16 at 8 bits, and the outputs are visibly wrong).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, scale: float, zp: int):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        if not -128 <= zp <= 127:
            raise ValueError(f"int8 zero point {zp} out of range")
        with warnings.catch_warnings():  # quantized tensors are deprecated, still the fast path
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_tensor(weight.float(), scale, zp, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(
                qweight, None if bias is None else bias.float()
            )
        self.handle = id(self)
        _PACKED[self.handle] = (self.packed, self.out_features)

    def __del__(self) -> None:
        _PACKED.pop(getattr(self, "handle", None), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return int8_linear(x, self.handle)
        return torch.ops.quantized.linear_dynamic(x, self.packed, True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def affine_params(weight: torch.Tensor, known: tuple[float, float] | None) -> tuple[float, int]:
    """(scale, zero point) for `weight`: the checkpoint's own when known, else symmetric min-max.

    Known parameters are used only if they reproduce the weight exactly, which they do for every
    tensor of the shipped checkpoint (all zero points are whole numbers from -25 to 65).
    """
    if known is not None:
        scale, zp = known[0], int(known[1])
        if zp == known[1] and -128 <= zp <= 127:
            q = torch.round(weight.float() / scale) + zp
            if q.min() >= -128 and q.max() <= 127 and torch.equal((q - zp) * scale, weight.float()):
                return scale, zp
    return max(float(weight.abs().max()) / 127.0, 1e-12), 0


def read_affine_params(flat: Mapping[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """{int8 tensor name: (scale, zero point)} from a flat safetensors dict."""
    return {
        name: (_flat_quantized(flat, name).scale, _flat_quantized(flat, name).zero_point)
        for name, tensor in flat.items()
        if tensor.dtype == torch.int8
    }
