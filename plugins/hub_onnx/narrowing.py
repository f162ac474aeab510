"""Rewriting a float64 ONNX model to compute in float32, for runtimes without float64 kernels (TFLite).

Every float64 tensor the graph declares or stores becomes float32: inputs, outputs, intermediate value infos,
initializers, Constant values and Cast targets, in subgraphs too. Callers verify the result against the float64
source like any other step, so what the narrowing costs is measured, not assumed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from hub_onnx.model_file import iter_nodes, iter_tensors

if TYPE_CHECKING:
    import onnx


def computes_in_float64(model: "onnx.ModelProto") -> bool:
    """Whether any declared tensor or stored value of the model is float64."""
    import onnx

    double = onnx.TensorProto.DOUBLE
    return (any(v.type.tensor_type.elem_type == double for v in _value_infos(model))
            or any(t.data_type == double for t in iter_tensors(model))
            or any(_casts_to(node, double) for node in iter_nodes(model)))


def float64_as_float32(model: "onnx.ModelProto") -> list[str]:
    """Narrow every float64 tensor of `model` to float32 in place; the names of what changed, for the report."""
    import onnx
    from onnx import numpy_helper

    double, single = onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT
    changed = []
    for value in _value_infos(model):
        if value.type.tensor_type.elem_type == double:
            value.type.tensor_type.elem_type = single
            changed.append(value.name)
    for tensor in iter_tensors(model):
        if tensor.data_type == double:
            narrowed = numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float32"), tensor.name)
            tensor.CopyFrom(narrowed)
            changed.append(tensor.name or "a constant")
    for node in iter_nodes(model):
        for attribute in node.attribute:
            if attribute.name == "to" and node.op_type == "Cast" and attribute.i == double:
                attribute.i = single
                changed.append(f"Cast {node.name or node.output[0]}")
    return changed


def _casts_to(node: "onnx.NodeProto", elem_type: int) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == elem_type for a in node.attribute)


def _graphs(model: "onnx.ModelProto") -> Iterator["onnx.GraphProto"]:
    pending = [model.graph]
    while pending:
        graph = pending.pop()
        yield graph
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    pending.append(attribute.g)
                pending.extend(attribute.graphs)


def _value_infos(model: "onnx.ModelProto") -> Iterator["onnx.ValueInfoProto"]:
    for graph in _graphs(model):
        yield from graph.input
        yield from graph.output
        yield from graph.value_info
