"""Moonshine base weights read straight out of the `moonshine-cpp` wheel's `.ort` files.

The wheel is the one copy of the base model this project can reach without a model hub, but it
holds the weights inside two ONNX Runtime flatbuffer graphs (shared/notes/weights.md). This module
turns those graphs into a Hugging Face `MoonshineForConditionalGeneration` state dict. Parameter
names come from the node that consumes each weight, never from the arbitrary `onnx::MatMul_N`
initializer numbers. The 132 int8 weights stay int8 (`QuantizedTensor`): the shipped fp32 model is
exactly int8 plus one scale and one integer zero point per tensor, so nothing is lost.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import WeightsError
from . import ort_format
from .quantized import (
    SCALE_SUFFIX,
    TIED_PARAMETERS,
    ZERO_POINT_SUFFIX,
    QuantizedTensor,
    Weights,
    _raise_if_any,
    dequantize_state_dict,
    to_safetensors_dict,
)

_LOGGER = logging.getLogger(__name__)

MOONSHINE_CPP_PACKAGE = "moonshine_cpp"
MOONSHINE_CPP_DIST = "moonshine-cpp"
MOONSHINE_CPP_VERSION = "0.1.4"
"""The wheel version whose graphs the key map below was checked against."""
INSTALL_HINT = f"pip install {MOONSHINE_CPP_DIST}=={MOONSHINE_CPP_VERSION}"

ZERO_POINT_TOLERANCE = 1e-3
"""How far `-offset / scale` may be from an integer (weights.md: the shipped ones are exact)."""

# --- What the graphs should yield: Hugging Face names for the base model (8 + 8 layers). ---

BASE_LAYERS = 8
"""Encoder and decoder layers of Moonshine base, the only model the wheel ships."""
_LAYER = (
    *(f"self_attn.{p}_proj.weight" for p in "qkvo"),
    *(f"mlp.{fc}.{leaf}" for fc in ("fc1", "fc2") for leaf in ("weight", "bias")),
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
)
_DECODER_LAYER = (
    *_LAYER,
    *(f"encoder_attn.{p}_proj.weight" for p in "qkvo"),
    "final_layernorm.weight",
)
_ENCODER_TOP = ("conv1.weight", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias")
_ENCODER_NORMS = ("groupnorm.weight", "groupnorm.bias", "layer_norm.weight")


def _names(prefix: str, top: tuple[str, ...], per_layer: tuple[str, ...]) -> frozenset[str]:
    layers = (f"layers.{i}.{name}" for i in range(BASE_LAYERS) for name in per_layer)
    return frozenset(prefix + name for name in (*top, *layers))


ENCODER_NAMES = _names("model.encoder.", (*_ENCODER_TOP, *_ENCODER_NORMS), _LAYER)
DECODER_NAMES = _names("model.decoder.", ("embed_tokens.weight", "norm.weight"), _DECODER_LAYER)
"""What `read_ort_checkpoint` returns: every parameter but the tied `proj_out.weight`."""

# --- How graph names become Hugging Face names. ---

_MODULE_RENAMES: Mapping[str, str] = {"dense": "o_proj", "up_proj": "fc1", "down_proj": "fc2"}
"""Exported module names that transformers spells differently (one path component each)."""

_CONSUMER_NODE = re.compile(r"^/(?P<module>.+)/(?P<op>[A-Za-z]+)$")
"""A node the exporter named after its module: `/layers.0/self_attn/q_proj/MatMul`."""


def _as_is(array: np.ndarray) -> np.ndarray:
    return array


def _transposed(array: np.ndarray) -> np.ndarray:
    """MatMul weights are stored [in, out]; `nn.Linear` wants [out, in]."""
    return array.T


def _flat(array: np.ndarray) -> np.ndarray:
    """Norm weights and biases are 1-D in PyTorch; the group norm's were exported as [C, 1]."""
    return array.reshape(-1)


_Layout = Callable[[np.ndarray], np.ndarray]
_CONSUMER_ROLES: Mapping[tuple[str, int], tuple[str, _Layout]] = {
    ("MatMul", 1): ("weight", _transposed),
    ("Gather", 0): ("weight", _as_is),
    ("Conv", 1): ("weight", _as_is),
    ("Conv", 2): ("bias", _as_is),
    ("Mul", 1): ("weight", _flat),
    ("Add", 0): ("bias", _flat),
    ("Add", 1): ("bias", _flat),
}
"""(op type, input index) of the consuming node -> parameter leaf name and layout fix."""

_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
"""ONNX control-flow ops, the only ones whose attributes hold subgraphs."""

_DTYPES: Mapping[int, np.dtype[Any]] = {1: np.dtype(np.float32), 3: np.dtype(np.int8)}
"""ONNX Runtime `TensorDataType` codes of parameters: FLOAT and INT8. Other types are constants."""


@dataclass(frozen=True)
class MoonshineCppFiles:
    """Where the installed `moonshine-cpp` wheel keeps the base model and its sample clip."""

    root: Path
    encoder: Path
    decoder: Path
    tokenizer_bin: Path
    sample_wav: Path
    version: str | None
    """Installed distribution version, from importlib.metadata (None when it has no metadata)."""

    def paths(self) -> tuple[Path, ...]:
        return (self.encoder, self.decoder, self.tokenizer_bin, self.sample_wav)


def locate_moonshine_cpp_files() -> MoonshineCppFiles:
    """Find the wheel's files without importing it: its native library crashes some CPUs."""
    root = _moonshine_cpp_dir()
    model_dir = root / "models" / "base-en"
    files = MoonshineCppFiles(
        root=root,
        encoder=model_dir / "encoder_model.ort",
        decoder=model_dir / "decoder_model_merged.ort",
        tokenizer_bin=model_dir / "tokenizer.bin",
        sample_wav=root / "test-data" / "beckett.wav",
        version=_installed_version(),
    )
    missing = [str(path) for path in files.paths() if not path.is_file()]
    if missing:
        raise WeightsError(
            f"{', '.join(missing)}: missing from the {MOONSHINE_CPP_DIST} package; "
            f"reinstall it with `{INSTALL_HINT}`"
        )
    _check_recorded_sizes(files)
    if files.version != MOONSHINE_CPP_VERSION:
        _LOGGER.warning(
            "%s %s is installed; the weight map was checked against %s",
            MOONSHINE_CPP_DIST,
            files.version,
            MOONSHINE_CPP_VERSION,
        )
    return files


def _moonshine_cpp_dir() -> Path:
    try:
        spec = importlib.util.find_spec(MOONSHINE_CPP_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"the {MOONSHINE_CPP_DIST} package (Moonshine base weights) is not installed; "
            f"install it with `{INSTALL_HINT}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _check_recorded_sizes(files: MoonshineCppFiles) -> None:
    """Catch a damaged install early: a cut-off tail can still parse, so compare with RECORD."""
    recorded = _recorded_sizes()
    for path in files.paths():
        size, expected = path.stat().st_size, recorded.get(path.resolve())
        if expected is not None and size != expected:
            raise WeightsError(
                f"{path}: {size} bytes, but the wheel's RECORD says {expected}; "
                f"reinstall it with `{INSTALL_HINT} --force-reinstall`"
            )


def _recorded_sizes() -> dict[Path, int]:
    try:
        record = importlib.metadata.files(MOONSHINE_CPP_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    return {Path(str(f.locate())).resolve(): f.size for f in record if f.size is not None}


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version(MOONSHINE_CPP_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- Reading: flatbuffer -> plain graph -> named parameters. ---


@dataclass(frozen=True)
class _Node:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class _OrtGraph:
    """The parts of one `.ort` file that hold parameters, as plain Python and numpy.

    `initializers` keeps only parameter candidates (see `_is_graph_constant`); `nodes` includes
    the nodes of every subgraph, because the merged decoder consumes its weights inside `If`.
    """

    path: Path
    initializers: Mapping[str, np.ndarray]
    nodes: tuple[_Node, ...]


@dataclass(frozen=True)
class _Dequantize:
    """The `Cast -> Mul(scale) -> Add(offset)` chain that turns one int8 initializer to float."""

    scale_name: str
    offset_name: str
    output: str


_Consumers = Mapping[str, list[tuple[_Node, int]]]


def read_ort_checkpoint(encoder_path: Path, decoder_path: Path) -> Weights:
    """Hugging Face names -> tensors (int8 weights as `QuantizedTensor`), tied head excluded."""
    start = time.perf_counter()
    weights: Weights = {}
    roles = (
        (Path(encoder_path), "model.encoder.", ENCODER_NAMES),
        (Path(decoder_path), "", DECODER_NAMES),
    )
    for path, prefix, expected in roles:
        found = _map_parameters(_read_ort_graph(path), prefix)
        _check_names(path, found, expected)
        weights.update(found)
    _LOGGER.info(
        "read %d tensors (%.2f M parameters) from %s and %s in %.2f s",
        len(weights),
        sum(_numel(value) for value in weights.values()) / 1e6,
        encoder_path,
        decoder_path,
        time.perf_counter() - start,
    )
    return weights


def _read_ort_graph(path: Path) -> _OrtGraph:
    """Parse one file; any flatbuffer error becomes a `WeightsError` naming the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ONNX Runtime model: {exc}") from exc
    if not ort_format.has_identifier(data):
        raise WeightsError(f"{path}: not an ONNX Runtime (.ort) model (no ORTM identifier)")
    try:
        graph = ort_format.read_graph(data)
        if graph is None:
            raise WeightsError(f"{path}: the ONNX Runtime model holds no graph")
        return _OrtGraph(path, _parameter_candidates(path, graph), tuple(_walk_nodes(path, graph)))
    except WeightsError:
        raise
    except Exception as exc:  # a corrupt flatbuffer fails in many ways: IndexError, struct.error..
        raise WeightsError(f"{path}: corrupt or truncated ONNX Runtime model: {exc!r}") from exc


def _parameter_candidates(path: Path, graph: ort_format.Graph) -> dict[str, np.ndarray]:
    candidates = {}
    for tensor in graph.initializers:
        name = tensor.name
        if not _is_graph_constant(name, tensor.data_type):
            candidates[name] = _tensor_array(path, name, tensor)
    return candidates


def _is_graph_constant(name: str, data_type: int) -> bool:
    """Folded constants (eps, shapes, axes, rotary frequencies) are not parameters.

    The exporter names them after the node that made them (`/layers.0/.../Constant_3_output_0`),
    or they have an integer type. Parameters are float or int8 and named otherwise.
    """
    return name.startswith("/") or data_type not in _DTYPES


def _tensor_array(path: Path, name: str, tensor: ort_format.Tensor) -> np.ndarray:
    """A zero-copy numpy view of one initializer's raw bytes, checked against its shape."""
    if tensor.external_data_offset >= 0:
        raise WeightsError(f"{path}: initializer {name} uses external data, which is unsupported")
    dtype = _DTYPES[tensor.data_type]
    shape = tensor.dims
    raw = tensor.raw_data
    if raw.nbytes != math.prod(shape) * dtype.itemsize:
        raise WeightsError(
            f"{path}: initializer {name} has {raw.nbytes} bytes of data for shape {list(shape)}"
        )
    if raw.nbytes == 0:
        return np.zeros(shape, dtype)
    return raw.view(dtype).reshape(shape)


def _walk_nodes(path: Path, graph: ort_format.Graph) -> Iterable[_Node]:
    """Every node of `graph` and its subgraphs (the decoder's `If` branches)."""
    for node in graph.nodes:
        op_type = node.op_type
        yield _Node(name=node.name, op_type=op_type, inputs=node.inputs, outputs=node.outputs)
        if op_type not in _SUBGRAPH_OPS:
            continue
        for attribute in node.attributes:
            subgraph = attribute.graph
            if subgraph is not None:
                _check_no_subgraph_parameters(path, subgraph)
                yield from _walk_nodes(path, subgraph)


def _check_no_subgraph_parameters(path: Path, subgraph: ort_format.Graph) -> None:
    """Weights live in the top graph; a branch may only hold empty `present.*` placeholders."""
    for tensor in subgraph.initializers:
        if not tensor.dims or math.prod(tensor.dims) != 0:
            raise WeightsError(
                f"{path}: unexpected non-empty initializer {tensor.name} in a subgraph"
            )


def _map_parameters(graph: _OrtGraph, prefix: str) -> Weights:
    """Name every parameter candidate by its consumer; fail on any that cannot be named."""
    consumers = _index_consumers(graph.nodes)
    chains = {
        name: _dequantize_chain(graph, consumers, name)
        for name, array in graph.initializers.items()
        if array.dtype == np.int8
    }
    affine = {name for chain in chains.values() for name in (chain.scale_name, chain.offset_name)}
    found: Weights = {}
    sources: dict[str, str] = {}
    unmapped = []
    for name, array in graph.initializers.items():
        if name in affine:
            continue
        chain = chains.get(name)
        target = _resolve(consumers, chain.output if chain else name, prefix)
        if target is None:
            unmapped.append(name)
            continue
        hf_name, layout = target
        if hf_name in sources:
            raise WeightsError(f"{graph.path}: {sources[hf_name]} and {name} both map to {hf_name}")
        sources[hf_name] = name
        found[hf_name] = _quantized(graph, name, chain, layout) if chain else _copy(array, layout)
    _raise_if_any(graph.path, "initializers not mapped to a parameter", {"": unmapped})
    return found


def _index_consumers(nodes: Iterable[_Node]) -> dict[str, list[tuple[_Node, int]]]:
    consumers: dict[str, list[tuple[_Node, int]]] = {}
    for node in nodes:
        for index, value in enumerate(node.inputs):
            consumers.setdefault(value, []).append((node, index))
    return consumers


def _dequantize_chain(graph: _OrtGraph, consumers: _Consumers, name: str) -> _Dequantize:
    cast = _only_consumer(graph, consumers, name, "Cast")
    mul = _only_consumer(graph, consumers, cast.outputs[0], "Mul")
    add = _only_consumer(graph, consumers, mul.outputs[0], "Add")
    return _Dequantize(
        scale_name=_scalar_operand(graph, mul, cast.outputs[0]),
        offset_name=_scalar_operand(graph, add, mul.outputs[0]),
        output=add.outputs[0],
    )


def _only_consumer(graph: _OrtGraph, consumers: _Consumers, value: str, op_type: str) -> _Node:
    nodes = [node for node, _ in consumers.get(value, [])]
    if len(nodes) != 1 or nodes[0].op_type != op_type:
        found = [f"{node.name} ({node.op_type})" for node in nodes] or ["nothing"]
        raise WeightsError(
            f"{graph.path}: int8 weight dequantization expected one {op_type} after {value}, "
            f"found {', '.join(found)}"
        )
    return nodes[0]


def _scalar_operand(graph: _OrtGraph, node: _Node, data_input: str) -> str:
    """The name of the one-element float initializer that `node` combines with `data_input`."""
    others = [name for name in node.inputs if name != data_input]
    array = graph.initializers.get(others[0]) if len(others) == 1 else None
    if array is None or array.size != 1 or array.dtype != np.float32:
        raise WeightsError(f"{graph.path}: {node.name} does not take a float scalar initializer")
    return others[0]


def _resolve(consumers: _Consumers, value: str, prefix: str) -> tuple[str, _Layout] | None:
    """The one parameter name and layout that the named consumers of `value` agree on."""
    targets = {_consumer_target(node, index, prefix) for node, index in consumers.get(value, [])}
    targets.discard(None)
    if len(targets) != 1:
        return None
    return targets.pop()


def _consumer_target(node: _Node, index: int, prefix: str) -> tuple[str, _Layout] | None:
    match = _CONSUMER_NODE.match(node.name)
    role = _CONSUMER_ROLES.get((node.op_type, index))
    if match is None or match["op"] != node.op_type or role is None:
        return None
    module = ".".join(_MODULE_RENAMES.get(part, part) for part in match["module"].split("/"))
    leaf, layout = role
    return f"{prefix}{module}.{leaf}", layout


def _copy(array: np.ndarray, layout: _Layout) -> torch.Tensor:
    """A writable, contiguous tensor (the array is a read-only view of the file's bytes)."""
    return torch.from_numpy(np.array(layout(array), order="C"))


def _quantized(graph: _OrtGraph, name: str, chain: _Dequantize, layout: _Layout) -> QuantizedTensor:
    """int8 + affine parameters; `w = q * scale + offset` becomes `(q - zp) * scale`."""
    scale = float(graph.initializers[chain.scale_name].reshape(()))
    offset = float(graph.initializers[chain.offset_name].reshape(()))
    if not (math.isfinite(scale) and scale > 0):
        raise WeightsError(f"{graph.path}: {name} has scale {scale}; expected a positive number")
    zero_point = -offset / scale
    if abs(zero_point - round(zero_point)) > ZERO_POINT_TOLERANCE:
        raise WeightsError(
            f"{graph.path}: {name} offset {offset} is not an integer multiple of scale {scale} "
            f"(zero point {zero_point})"
        )
    q = _copy(graph.initializers[name], layout)
    return QuantizedTensor(q=q, scale=scale, zero_point=float(round(zero_point)))


def _check_names(path: Path, found: Mapping[str, object], expected: frozenset[str]) -> None:
    problems = {"missing": expected - found.keys(), "unexpected": found.keys() - expected}
    _raise_if_any(path, "parameters do not fit Moonshine base", problems)


def _numel(value: torch.Tensor | QuantizedTensor) -> int:
    return value.q.numel() if isinstance(value, QuantizedTensor) else value.numel()


__all__ = [
    "SCALE_SUFFIX",
    "TIED_PARAMETERS",
    "ZERO_POINT_SUFFIX",
    "MoonshineCppFiles",
    "QuantizedTensor",
    "Weights",
    "dequantize_state_dict",
    "locate_moonshine_cpp_files",
    "read_ort_checkpoint",
    "to_safetensors_dict",
]
