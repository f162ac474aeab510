"""Format detection for .tflite files by reading the flatbuffer directly: struct and mmap only, no framework.

A TFLite model is a flatbuffer whose file identifier, bytes 4..8, is "TFL3". The few fields read here (the
tensors' types and whether their buffers hold data) follow tensorflow/lite/schema/schema.fbs; the field numbers
are the schema's, which only ever grows.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
# schema.fbs field numbers
MODEL_VERSION, MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS, MODEL_BUFFERS = 0, 1, 2, 4
CODE_DEPRECATED_BUILTIN, CODE_CUSTOM, CODE_BUILTIN = 0, 1, 3
CUSTOM = 32
SUBGRAPH_TENSORS = 0
TENSOR_TYPE, TENSOR_BUFFER, TENSOR_IS_VARIABLE = 1, 2, 5
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2
# TensorType values
FLOAT32, FLOAT16, UINT8, INT16, INT8, INT4, BFLOAT16 = 0, 1, 3, 7, 9, 17, 18
QUANTIZED_TYPES = frozenset({UINT8, INT8, INT16, INT4})
FLOAT_TYPES = frozenset({FLOAT32, FLOAT16, BFLOAT16})


class _Table:
    """One flatbuffer table: a position in the buffer and its vtable."""

    def __init__(self, data: bytes | mmap.mmap, position: int) -> None:
        self.data, self.position = data, position
        self.vtable = position - struct.unpack_from("<i", data, position)[0]
        self.vtable_size = struct.unpack_from("<H", data, self.vtable)[0]

    def _offset(self, field: int) -> int:
        entry = 4 + 2 * field
        return struct.unpack_from("<H", self.data, self.vtable + entry)[0] if entry < self.vtable_size else 0

    def scalar(self, field: int, fmt: str, default: int = 0) -> int:
        offset = self._offset(field)
        return struct.unpack_from("<" + fmt, self.data, self.position + offset)[0] if offset else default

    def _vector(self, field: int) -> tuple[int, int]:
        offset = self._offset(field)
        if not offset:
            return 0, 0
        start = self.position + offset
        start += struct.unpack_from("<I", self.data, start)[0]
        return start + 4, struct.unpack_from("<I", self.data, start)[0]

    def vector_length(self, field: int) -> int:
        return self._vector(field)[1]

    def string(self, field: int) -> str:
        start, count = self._vector(field)
        return bytes(self.data[start:start + count]).decode("utf-8", "replace")

    def tables(self, field: int) -> list["_Table"]:
        start, count = self._vector(field)
        return [_Table(self.data, start + 4 * i + struct.unpack_from("<I", self.data, start + 4 * i)[0])
                for i in range(count)]


@dataclass(frozen=True)
class TensorCensus:
    """Element types of a model's tensors: constants (weights) and activations, counted per TensorType."""

    constant_types: dict[int, int]
    activation_types: dict[int, int]


def detect_tflite(path: Path) -> dict[str, str] | None:
    """{"precision": ...} for a TFLite flatbuffer, None for anything else. Never raises."""
    try:
        path = Path(path)
        if not path.is_file() or path.stat().st_size < 16:
            return None
        with path.open("rb") as stream:
            if stream.read(8)[4:8] != FILE_IDENTIFIER:
                return None
            with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
                census = tensor_census(data)
        if census is None:
            return None
        return {"precision": precision_of(census), "graph": "raw"}
    except Exception:
        return None


def tensor_census(data: bytes | mmap.mmap) -> TensorCensus | None:
    """Count tensors by type, constants apart from activations; None when this is no usable TFLite model."""
    model = _Table(data, struct.unpack_from("<I", data, 0)[0])
    if model.scalar(MODEL_VERSION, "I") != SCHEMA_VERSION:
        return None
    subgraphs = model.tables(MODEL_SUBGRAPHS)
    if not subgraphs:
        return None
    buffers = model.tables(MODEL_BUFFERS)
    constant_types: dict[int, int] = {}
    activation_types: dict[int, int] = {}
    for subgraph in subgraphs:
        for tensor in subgraph.tables(SUBGRAPH_TENSORS):
            kind = tensor.scalar(TENSOR_TYPE, "b")
            buffer_index = tensor.scalar(TENSOR_BUFFER, "I")
            holds_data = 0 < buffer_index < len(buffers) and _has_data(buffers[buffer_index])
            counts = constant_types if holds_data else activation_types
            if holds_data or not tensor.scalar(TENSOR_IS_VARIABLE, "B"):
                counts[kind] = counts.get(kind, 0) + 1
    return TensorCensus(constant_types, activation_types)


def operator_codes(path: Path) -> tuple[set[int], set[str]]:
    """The builtin operator codes a model uses, and the names of its custom operators."""
    with Path(path).open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
        model = _Table(data, struct.unpack_from("<I", data, 0)[0])
        builtins, customs = set(), set()
        for code in model.tables(MODEL_OPERATOR_CODES):
            builtin = max(code.scalar(CODE_DEPRECATED_BUILTIN, "b"), code.scalar(CODE_BUILTIN, "i"))
            if builtin == CUSTOM:
                customs.add(code.string(CODE_CUSTOM))
            else:
                builtins.add(builtin)
        return builtins, customs


def precision_of(census: TensorCensus) -> str:
    """int8 when activations are quantized (full integer, whatever the I/O type); int8-dynamic when only the
    weights are; fp16 when float16 weights outnumber float32 ones; fp32 otherwise."""
    if any(census.activation_types.get(t) for t in QUANTIZED_TYPES):
        return "int8"
    if any(census.constant_types.get(t) for t in (INT8, INT4)):
        return "int8-dynamic"
    if census.constant_types.get(FLOAT16, 0) > census.constant_types.get(FLOAT32, 0):
        return "fp16"
    return "fp32"


def _has_data(buffer: _Table) -> bool:
    # Models over 2 GB keep data after the flatbuffer: offset and size instead of an inline vector.
    return buffer.vector_length(BUFFER_DATA) > 0 or (buffer.scalar(BUFFER_OFFSET, "Q") > 1
                                                      and buffer.scalar(BUFFER_SIZE, "Q") > 0)
