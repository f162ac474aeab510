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


def upgraded(model: "onnx.ModelProto", opset: int = MODERN_OPSET) -> "onnx.ModelProto":
    """The model converted to `opset` (returned unchanged when it is that new already)."""
    import onnx
    from onnx import version_converter

    current = opset_version(model)
    if current is None or current >= opset:
        return model
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
