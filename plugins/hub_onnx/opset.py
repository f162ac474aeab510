"""Moving a model written for an old ONNX opset to a current one with onnx's version converter.

Old exports (opset 6 and older, e.g. ONNX's own pytorch-converted test models) trip the tools downstream:
onnxslim's shape inference returns nothing below opset 7, and ONNX Runtime has dropped some opset-6 kernels.
The converter rewrites each operator to its newer form (Add's broadcast attribute to numpy broadcasting, Pad's
attributes to inputs, ...); verification then checks the result against the source like any other step.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hub.errors import StepFailedError
from hub_onnx.model_file import PROTOBUF_SIZE_LIMIT, opset_version

if TYPE_CHECKING:
    import onnx

# Supported by ONNX Runtime, onnxslim and onnx2tf alike, and reachable by the converter from every older opset.
MODERN_OPSET = 13
# Before opset 7, PRelu applied a 1-D slope along the channel axis (1); from 7 on it broadcasts numpy-style, along
# the last axis. The converter keeps the slope's shape, which silently changes what the model computes.
PRELU_BROADCASTS_FROM = 7


def upgraded(model: "onnx.ModelProto", opset: int = MODERN_OPSET) -> "onnx.ModelProto":
    """The model converted to `opset` (returned unchanged when it is that new already)."""
    import onnx
    from onnx import version_converter

    current = opset_version(model)
    if current is None or current >= opset:
        return model
    if current < PRELU_BROADCASTS_FROM:
        model = _with_channel_axis_prelu_slopes(model)
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as error:
        raise StepFailedError(f"onnx's version converter cannot move this model from opset {current} to {opset}: "
                              f"{type(error).__name__}: {error}") from error
    # Pad and others turn attributes into initializers, which IR versions before 4 require among the graph
    # inputs: give the model the IR version its new opset needs.
    converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(
        list(converted.opset_import), ignore_unknown=True))
    try:
        if converted.ByteSize() < PROTOBUF_SIZE_LIMIT:  # the in-memory checker refuses bigger models
            onnx.checker.check_model(converted)
    except onnx.checker.ValidationError as error:
        raise StepFailedError(f"the model converted from opset {current} to {opset} is not valid ONNX: "
                              f"{error}") from error
    return converted


def _with_channel_axis_prelu_slopes(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """A copy whose PRelu slopes of shape (C,), stored as initializers and applied to inputs of rank > 2, are
    reshaped to (C, 1, ...): opset 6's channel-axis meaning, written so that numpy broadcasting keeps it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
             if v.type.tensor_type.HasField("shape")}
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "PRelu" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        slope = initializers[node.input[1]]
        rank = ranks.get(node.input[0], 0)
        if len(slope.dims) == 1 and slope.dims[0] > 1 and rank > 2:
            values = numpy_helper.to_array(slope).reshape(slope.dims[0], *([1] * (rank - 2)))
            slope.CopyFrom(numpy_helper.from_array(values, slope.name))
            _reshape_declared_input(model, slope.name, values.shape)
    return model


def _reshape_declared_input(model: "onnx.ModelProto", name: str, shape: tuple[int, ...]) -> None:
    """Old exports also list initializers among the graph inputs, with a shape that must follow the data."""
    import onnx

    for value in model.graph.input:
        if value.name == name:
            elem_type = value.type.tensor_type.elem_type
            value.CopyFrom(onnx.helper.make_tensor_value_info(name, elem_type, list(shape)))
