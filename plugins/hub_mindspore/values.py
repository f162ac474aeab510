"""MindIR values <-> Python: attributes (scalars, tuples, tensors, monads) and tensors <-> numpy arrays."""
from __future__ import annotations

from typing import Any

import numpy as np

from hub.errors import UnsupportedModelError
from hub_mindspore.wire import AttributeProto, AttributeType, DataType, TensorProto

NUMPY_TYPES: dict[int, type] = {
    DataType.FLOAT: np.float32, DataType.UINT8: np.uint8, DataType.INT8: np.int8, DataType.UINT16: np.uint16,
    DataType.INT16: np.int16, DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
    DataType.FLOAT16: np.float16, DataType.DOUBLE: np.float64, DataType.FLOAT64: np.float64,
    DataType.UINT32: np.uint32, DataType.UINT64: np.uint64,
}
DATA_TYPES: dict[np.dtype, int] = {np.dtype(t): code for code, t in NUMPY_TYPES.items() if code != DataType.FLOAT64}


class Monad:
    """MindSpore's side-effect token (UMonad/IOMonad): ordering plumbing, no data."""

    def __repr__(self) -> str:
        return "Monad"


MONAD = Monad()


def tensor_to_array(tensor: TensorProto) -> np.ndarray:
    dtype = NUMPY_TYPES.get(tensor.data_type)
    if dtype is None:
        raise UnsupportedModelError(f"MindIR tensor {tensor.name or tensor.ref_key!r} has data type "
                                    f"{tensor.data_type}, which the hub cannot read")
    shape = tuple(tensor.dims)
    if tensor.raw_data:
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(shape).copy()
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        values = getattr(tensor, field)
        if len(values):
            return np.asarray(values, dtype=dtype).reshape(shape)
    return np.zeros(shape, dtype=dtype)


def array_to_tensor(array: np.ndarray, tensor: TensorProto | None = None) -> TensorProto:
    array = np.ascontiguousarray(array)
    if array.dtype not in DATA_TYPES:
        raise UnsupportedModelError(f"MindIR cannot hold a tensor of type {array.dtype}")
    tensor = tensor if tensor is not None else TensorProto()
    tensor.data_type = DATA_TYPES[array.dtype]
    tensor.dims.extend(array.shape)
    tensor.raw_data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return tensor


def decode(attribute: AttributeProto) -> Any:
    """An attribute as Python: int/float/bool/str, tuple, numpy array, None or MONAD. Scalars inside tuples
    travel in the repeated fields (`ints`, `floats`...), top-level ones in the singular fields."""
    kind = attribute.type
    if kind in (AttributeType.TUPLE, AttributeType.LIST):
        return tuple(decode(value) for value in attribute.values)
    if kind in (AttributeType.UMONAD, AttributeType.IOMONAD):
        return MONAD
    if kind == AttributeType.NONE:
        return None
    if kind == AttributeType.TENSORS:
        arrays = tuple(tensor_to_array(t) for t in attribute.tensors)
        return arrays[0] if len(arrays) == 1 else arrays
    if kind == AttributeType.TENSOR:
        return tensor_to_array(attribute.t)
    if kind == AttributeType.BOOL:
        return bool(attribute.ints[0] if len(attribute.ints) else attribute.i)
    if kind in (AttributeType.FLOAT, AttributeType.FLOAT16):
        return float(attribute.floats[0] if len(attribute.floats) else attribute.f)
    if kind == AttributeType.DOUBLE:
        return float(attribute.doubles[0] if len(attribute.doubles) else attribute.d)
    if kind == AttributeType.STRING:
        return (attribute.strings[0] if len(attribute.strings) else attribute.s).decode("utf-8", "replace")
    if AttributeType.UINT8 <= kind <= AttributeType.INT64 or kind in (AttributeType.UINT32, AttributeType.UINT64):
        return int(attribute.ints[0] if len(attribute.ints) else attribute.i)
    raise UnsupportedModelError(f"MindIR attribute {attribute.name!r} has type {kind}, which the hub cannot read")


def encode(value: Any, attribute: AttributeProto | None = None, nested: bool = False) -> AttributeProto:
    """A Python value as MindSpore writes it: bool/int/float/str scalars, tuples (of scalars), numpy arrays
    (a TENSORS constant), None, MONAD."""
    attribute = attribute if attribute is not None else AttributeProto()
    if isinstance(value, Monad):
        attribute.type = AttributeType.UMONAD
    elif value is None:
        attribute.type = AttributeType.NONE
    elif isinstance(value, (tuple, list)):
        attribute.type = AttributeType.TUPLE
        for item in value:
            encode(item, attribute.values.add(), nested=True)
    elif isinstance(value, np.ndarray):
        attribute.type = AttributeType.TENSORS
        array_to_tensor(value, attribute.tensors.add())
    elif isinstance(value, (bool, np.bool_)):
        _put_scalar(attribute, AttributeType.BOOL, "i", "ints", int(value), nested)
    elif isinstance(value, (int, np.integer)):
        _put_scalar(attribute, AttributeType.INT64, "i", "ints", int(value), nested)
    elif isinstance(value, (float, np.floating)):
        _put_scalar(attribute, AttributeType.FLOAT, "f", "floats", float(value), nested)
    elif isinstance(value, str):
        _put_scalar(attribute, AttributeType.STRING, "s", "strings", value.encode(), nested)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as a MindIR attribute")
    return attribute


def _put_scalar(attribute: AttributeProto, kind: int, single: str, repeated: str, value: Any, nested: bool) -> None:
    attribute.type = kind
    if nested:
        getattr(attribute, repeated).append(value)
    else:
        setattr(attribute, single, value)
