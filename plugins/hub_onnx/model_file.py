"""Reading ONNX files: format detection, description, and loading that keeps external data inside the model's
folder. The `onnx` import stays inside functions so importing this module costs nothing."""
from __future__ import annotations

import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, Iterator

from hub.errors import UnsupportedModelError
from hub.states import ModelInfo, TensorSpec

if TYPE_CHECKING:
    import onnx

STATIC_INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
DYNAMIC_INT8_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                              "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLSTM"})
# protobuf tag of ModelProto field 1 (ir_version, varint): every ONNX writer serializes it first.
IR_VERSION_TAG = 0x08
MAX_PLAUSIBLE_IR_VERSION = 64
INT4_OPS = frozenset({"MatMulNBits", "GatherBlockQuantized"})
PROTOBUF_SIZE_LIMIT = 2**31 - 1


def detect_onnx(path: Path) -> dict[str, str] | None:
    """The state attributes of an ONNX model file, or None when `path` is not one. Never raises."""
    try:
        if not _starts_like_onnx(path):
            return None
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        # A file cut at a field boundary still parses; a usable model has a graph with outputs and an opset.
        if not model.HasField("graph") or not model.graph.output or not model.opset_import:
            return None
        return {"precision": precision_of(model), "graph": "raw"}
    except Exception:
        return None


def describe_onnx(path: Path, options: dict[str, Any] | None = None) -> ModelInfo:
    """Inputs, outputs, parameter count and provenance of an ONNX model (weights are not read)."""
    model = load_model(path, with_weights=False)
    notes = [f"opset {opset_version(model)}", f"ir_version {model.ir_version}"]
    if model.producer_name:
        notes.append(f"producer {model.producer_name} {model.producer_version}".strip())
    if any(_location_of(t) is not None for t in iter_tensors(model)):
        notes.append("weights are stored in external data files next to the model")
    return ModelInfo(
        format="onnx",
        inputs=graph_inputs(model),
        outputs=tuple(tensor_spec(v) for v in model.graph.output),
        parameters=sum(math.prod(t.dims) for t in model.graph.initializer),
        notes=tuple(notes),
    )


def load_model(path: Path, with_weights: bool = True) -> "onnx.ModelProto":
    """Load an ONNX model, reading external data only from files inside the model's own folder.

    Raises UnsupportedModelError for a file that does not parse or names external data outside its folder.
    """
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise UnsupportedModelError(f"{path.name} is not a readable ONNX model", detail=str(error)) from error
    check_external_data(model, path.parent)
    if with_weights:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as error:
            raise UnsupportedModelError(f"the external data of {path.name} cannot be read: keep the data files "
                                        "next to the model", detail=str(error)) from error
    return model


def check_external_data(model: "onnx.ModelProto", model_folder: Path) -> None:
    """Refuse external-data locations that are absolute or resolve outside `model_folder`."""
    folder = Path(model_folder).resolve()
    for tensor in iter_tensors(model):
        location = _location_of(tensor)
        if location is None:
            continue
        absolute = PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute()
        if absolute or not (folder / location).resolve().is_relative_to(folder):
            raise UnsupportedModelError(
                f"tensor {tensor.name!r} points its data at {location!r}, outside the model's folder; refusing "
                "to read it (external data must sit next to the model file)")


def save_model(model: "onnx.ModelProto", path: Path) -> Path:
    """Save `model`, moving weights to `<name>.data` beside it when protobuf's 2 GB limit requires it."""
    import onnx

    if model.ByteSize() < PROTOBUF_SIZE_LIMIT:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")
    return path


def is_large(model: "onnx.ModelProto", path: Path) -> bool:
    """Whether the model at `path` with its external data is too big for one protobuf (libraries need a flag)."""
    locations = {_location_of(t) for t in iter_tensors(model)} - {None}
    data_bytes = sum((path.parent / str(location)).stat().st_size for location in locations)
    return path.stat().st_size + data_bytes >= PROTOBUF_SIZE_LIMIT


def precision_of(model: "onnx.ModelProto") -> str:
    """int4, int8-dynamic, int8, fp16 or fp32, read from the operators and the weights' element types."""
    op_types = {node.op_type for node in iter_nodes(model)}
    if op_types & INT4_OPS:
        return "int4"
    if op_types & DYNAMIC_INT8_OPS:
        return "int8-dynamic"
    if op_types & STATIC_INT8_OPS or any(op.startswith("QLinear") for op in op_types):
        return "int8"
    return "fp16" if _mostly_float16(model) else "fp32"


def tensor_spec(value: "onnx.ValueInfoProto") -> TensorSpec:
    """A graph input or output as a TensorSpec: unknown or symbolic dimensions become None."""
    tensor_type = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    return TensorSpec(value.name, shape, numpy_dtype_name(tensor_type.elem_type))


def numpy_dtype_name(elem_type: int) -> str:
    import numpy as np
    import onnx

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "unknown"


def graph_inputs(model: "onnx.ModelProto") -> tuple[TensorSpec, ...]:
    """The inputs a caller must feed: graph inputs that are not initializers."""
    initializer_names = {t.name for t in model.graph.initializer}
    return tuple(tensor_spec(v) for v in model.graph.input if v.name not in initializer_names)


def opset_version(model: "onnx.ModelProto") -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def iter_nodes(model: "onnx.ModelProto") -> Iterator["onnx.NodeProto"]:
    """Every node of the main graph, its subgraphs and local functions."""
    for graph in _iter_graphs(model.graph):
        yield from graph.node
    for function in model.functions:
        yield from function.node


def iter_tensors(model: "onnx.ModelProto") -> Iterator["onnx.TensorProto"]:
    """Every tensor that may hold data: initializers, sparse initializers and tensor attributes, subgraphs too."""
    nodes = [n for graph in _iter_graphs(model.graph) for n in graph.node]
    nodes += [n for function in model.functions for n in function.node]
    for graph in _iter_graphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices


def _iter_graphs(graph: "onnx.GraphProto") -> Iterator["onnx.GraphProto"]:
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _iter_graphs(attribute.g)
            for subgraph in attribute.graphs:
                yield from _iter_graphs(subgraph)


def _location_of(tensor: "onnx.TensorProto") -> str | None:
    """The external-data location of a tensor, or None when its data is inline."""
    import onnx

    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    entries = {entry.key: entry.value for entry in tensor.external_data}
    return entries.get("location", "")


def _mostly_float16(model: "onnx.ModelProto") -> bool:
    import onnx

    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                   onnx.TensorProto.BFLOAT16}
    elements = {t: 0 for t in float_types}
    for tensor in model.graph.initializer:
        if tensor.data_type in float_types:
            elements[tensor.data_type] += math.prod(tensor.dims)
    total = sum(elements.values())
    return total > 0 and elements[onnx.TensorProto.FLOAT16] * 2 > total


def _starts_like_onnx(path: Path) -> bool:
    """Whether the first bytes can open a serialized ModelProto: the ir_version field, small and positive."""
    if not path.is_file():
        return False
    with path.open("rb") as stream:
        head = stream.read(2)
    return len(head) == 2 and head[0] == IR_VERSION_TAG and 0 < head[1] <= MAX_PLAUSIBLE_IR_VERSION
