"""Rewriting a .tflite flatbuffer into plain builtin operators that other tools read, on a copy.

Converters and quantizers that read TFLite files (tf2onnx, ai-edge-quantizer) know dense constants and builtin
operators only; MediaPipe's models ship two things they do not:
- sparse weights behind DENSIFY operators (tf2onnx reads the sparse buffer as if it were dense and fails with
  "cannot reshape array of size 96 into shape (16,1,1,24)"; ai-edge-quantizer writes a file the interpreter
  refuses). Each DENSIFY is replaced by the dense constant the interpreter itself computes from it.
- MediaPipe's custom operator Convolution2DTransposeBias (a transposed convolution plus a bias, with its padding
  and strides packed as a TfLiteTransposeConvParams struct). It becomes the builtin TRANSPOSE_CONV and an ADD of
  the bias, which every TFLite tool knows.
Float16 weights behind DEQUANTIZE operators can be widened the same way: the step tflite-widen-fp16 gives a
float16 TFLite the float32 weights it computes with anyway, so that the "tflite" target needs no conversion
through another framework (and its channels-last inputs stay as they are).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hub.declarations import StepContext

TRANSPOSE_CONV_BIAS = b"Convolution2DTransposeBias"
DENSIFY = 124  # schema.fbs BuiltinOperator
# TfLitePadding in MediaPipe's packed parameters (kTfLitePaddingSame = 1, kTfLitePaddingValid = 2), and the
# flatbuffer schema's Padding for the builtin (SAME = 0, VALID = 1).
_PACKED_PADDING = {1: "SAME", 2: "VALID"}


def needs_rewrite(path: Path) -> bool:
    """Whether the file has an operator this module rewrites (read without loading the model's weights)."""
    from hub_litert.flatbuffer import operator_codes

    builtins, customs = operator_codes(path)
    return DENSIFY in builtins or TRANSPOSE_CONV_BIAS.decode() in customs


def builtin_copy(source: Path, target: Path) -> dict[str, int]:
    """Write `source` rewritten (see the module's docstring) to `target`; how many operators were rewritten."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(source))
    densified = densify_constants(model, source)
    replaced = replace_transpose_conv_bias(model)
    drop_unused_tensors(model)
    flatbuffer_utils.write_model(model, str(target))
    return {"sparse_constants_densified": densified, "transpose_conv_bias_replaced": replaced}


def widen_to_float32(ctx: "StepContext") -> Path:
    """The step tflite-widen-fp16: float32 constants for the float16 ones behind DEQUANTIZE, sparse constants
    densified and MediaPipe's transposed convolution made builtin. Lossless: DEQUANTIZE computed the same."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(ctx.input_path))
    densified = densify_constants(model, ctx.input_path)
    replaced = replace_transpose_conv_bias(model)
    widened = widen_float16_constants(model)
    drop_unused_tensors(model)
    output = ctx.workdir / "model.fp32.tflite"
    flatbuffer_utils.write_model(model, str(output))
    ctx.notes.update(float16_constants_widened=widened, sparse_constants_densified=densified,
                     transpose_conv_bias_replaced=replaced)
    return output


def densify_constants(model: Any, path: Path) -> int:
    """Replace each DENSIFY of the main graph by a constant holding the dense values the interpreter computes
    (a run on zeros: DENSIFY reads constants only); returns how many."""
    from ai_edge_litert import schema_py_generated as schema

    graph = model.subgraphs[0]
    densify = [op for op in graph.operators if builtin_of(model, op) == schema.BuiltinOperator.DENSIFY]
    if not densify:
        return 0
    values = _computed_tensors(path, [int(op.outputs[0]) for op in densify])
    for op in densify:
        hold_constant(model, graph.tensors[op.outputs[0]], values[int(op.outputs[0])])
    graph.operators = [op for op in graph.operators if not any(op is d for d in densify)]
    return len(densify)


def _computed_tensors(path: Path, indices: list[int]) -> dict[int, np.ndarray]:
    from hub_litert.interpreter import open_interpreter

    interpreter = open_interpreter(path, delegates=False, preserve_all_tensors=True)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    return {index: np.array(interpreter.get_tensor(index)) for index in indices}


def widen_float16_constants(model: Any) -> int:
    """Replace each DEQUANTIZE of a float16 constant by a float32 constant holding the same values, and drop the
    float16 tensors nothing reads any more; returns how many were replaced."""
    from ai_edge_litert import schema_py_generated as schema

    widened = 0
    for graph in model.subgraphs:
        kept = []
        for op in graph.operators:
            source = graph.tensors[op.inputs[0]] if op.inputs is not None and len(op.inputs) else None
            data = model.buffers[source.buffer].data if source is not None else None
            if (builtin_of(model, op) != schema.BuiltinOperator.DEQUANTIZE or source.type != schema.TensorType.FLOAT16
                    or data is None or not len(data)):
                kept.append(op)
                continue
            hold_constant(model, graph.tensors[op.outputs[0]],
                           np.frombuffer(bytes(bytearray(data)), np.float16).astype(np.float32))
            widened += 1
        graph.operators = kept
    return widened


def replace_transpose_conv_bias(model: Any) -> int:
    """Replace each Convolution2DTransposeBias of the main graph by TRANSPOSE_CONV (output shape, weights,
    input) into a new tensor, and ADD of the bias into the custom operator's output; returns how many."""
    from ai_edge_litert import schema_py_generated as schema

    graph, rewritten, count = model.subgraphs[0], [], 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        custom = bytes(code.customCode or b"") if builtin_of_code(code) == schema.BuiltinOperator.CUSTOM else b""
        if custom != TRANSPOSE_CONV_BIAS:
            rewritten.append(op)
            continue
        rewritten.extend(_transpose_conv_and_add(model, graph, op))
        count += 1
    graph.operators = rewritten
    return count


def _transpose_conv_and_add(model: Any, graph: Any, op: Any) -> list[Any]:
    from ai_edge_litert import schema_py_generated as schema

    data, weights, bias = (int(i) for i in op.inputs)
    (output,) = (int(i) for i in op.outputs)
    padding, stride_w, stride_h = struct.unpack("<3i", bytes(bytearray(op.customOptions))[:12])
    if padding not in _PACKED_PADDING:
        raise ValueError(f"{TRANSPOSE_CONV_BIAS.decode()} with padding {padding}, neither SAME nor VALID")
    shape = new_tensor(graph, f"{name_of(graph, output)}/output_shape", [4], schema.TensorType.INT32)
    hold_constant(model, graph.tensors[shape], np.asarray(graph.tensors[output].shape, np.int32))
    convolved = new_tensor(graph, f"{name_of(graph, output)}/transpose_conv", list(graph.tensors[output].shape),
                            graph.tensors[output].type)
    options = schema.TransposeConvOptionsT()
    options.padding = getattr(schema.Padding, _PACKED_PADDING[padding])
    options.strideW, options.strideH = stride_w, stride_h
    transpose_conv = new_operator(model, schema.BuiltinOperator.TRANSPOSE_CONV, [shape, weights, data], [convolved],
                               schema.BuiltinOptions.TransposeConvOptions, options)
    add = new_operator(model, schema.BuiltinOperator.ADD, [convolved, bias], [output],
                    schema.BuiltinOptions.AddOptions, schema.AddOptionsT())
    return [transpose_conv, add]


def new_operator(model: Any, builtin: int, inputs: list[int], outputs: list[int], options_type: int,
                 options: Any) -> Any:
    """A builtin operator over tensor indices (its operator code added to the model if it has none yet)."""
    from ai_edge_litert import schema_py_generated as schema

    op = schema.OperatorT()
    op.opcodeIndex = opcode_index(model, builtin)
    op.inputs, op.outputs = inputs, outputs
    op.builtinOptionsType, op.builtinOptions = options_type, options
    return op


def opcode_index(model: Any, builtin: int) -> int:
    """The index of the builtin's operator code, added to the model if it has none yet."""
    from ai_edge_litert import schema_py_generated as schema

    for index, code in enumerate(model.operatorCodes):
        if builtin_of_code(code) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def new_tensor(graph: Any, name: str, shape: list[int], tensor_type: int) -> int:
    """Append a tensor with no data to the graph; its index."""
    from ai_edge_litert import schema_py_generated as schema

    tensor = schema.TensorT()
    tensor.name, tensor.shape, tensor.type, tensor.buffer = name.encode(), shape, tensor_type, 0
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def name_of(graph: Any, index: int) -> str:
    raw = graph.tensors[index].name
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def builtin_of(model: Any, op: Any) -> int:
    """The operator's builtin code (files older than the `builtin_code` field keep it in the deprecated one)."""
    return builtin_of_code(model.operatorCodes[op.opcodeIndex])


def builtin_of_code(code: Any) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def hold_constant(model: Any, tensor: Any, values: np.ndarray) -> None:
    """Make `tensor` a constant holding `values` (in a new buffer), dense: any sparsity it had is dropped."""
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8)
    model.buffers.append(buffer)
    tensor.buffer, tensor.sparsity = len(model.buffers) - 1, None


def drop_unused_tensors(model: Any) -> None:
    """Remove the tensors no operator, graph input or output reads or writes (renumbering the rest), and empty
    the buffers no tensor holds any more."""
    for number, graph in enumerate(model.subgraphs):
        indices = [graph.inputs, graph.outputs]
        indices += [field for op in graph.operators for field in (op.inputs, op.outputs, op.intermediates)
                    if field is not None]
        used = sorted({int(i) for field in indices for i in field if i >= 0})
        renumbered = {old: new for new, old in enumerate(used)}

        def renumber(field: Any) -> Any:
            return None if field is None else [renumbered[int(i)] if i >= 0 else -1 for i in field]

        for op in graph.operators:
            op.inputs, op.outputs, op.intermediates = (renumber(op.inputs), renumber(op.outputs),
                                                       renumber(op.intermediates))
        graph.inputs, graph.outputs = renumber(graph.inputs), renumber(graph.outputs)
        graph.tensors = [graph.tensors[i] for i in used]
        for signature in model.signatureDefs or ():
            if signature.subgraphIndex == number:
                for entry in (signature.inputs or []) + (signature.outputs or []):
                    entry.tensorIndex = renumbered[int(entry.tensorIndex)]
    held = {tensor.buffer for graph in model.subgraphs for tensor in graph.tensors}
    for index, buffer in enumerate(model.buffers):
        if index and index not in held:
            buffer.data = None


def requantize_io(path: Path, edges: Path) -> list[str]:
    """Give a model that computes with 16-bit activations (TFLite's 16x8 mode, whose converter writes int16
    inputs and outputs) the inputs and outputs of `edges`, the same network converted with int8 ones: each
    input is then read in the narrow type and requantized to int16 by a QUANTIZE operator, and each output
    requantized back by another. Tensors are matched by name, else by position. Rewrites `path`; returns the
    names of the inputs and outputs changed."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model, narrow_model = flatbuffer_utils.read_model(str(path)), flatbuffer_utils.read_model(str(edges))
    graph, narrow = model.subgraphs[0], narrow_model.subgraphs[0]
    remapped: dict[int, int] = {}
    before, after = [], []
    for ends, narrow_ends, reads in ((graph.inputs, narrow.inputs, True), (graph.outputs, narrow.outputs, False)):
        for index, narrow_index in _matched_ends(graph, list(ends), narrow, list(narrow_ends)):
            wide, edge = graph.tensors[index], narrow.tensors[narrow_index]
            if wide.type == edge.type or wide.type != schema.TensorType.INT16:
                continue
            remapped[index] = _edge_tensor(graph, wide, edge)
            pair = [remapped[index], index] if reads else [index, remapped[index]]
            op = new_operator(model, schema.BuiltinOperator.QUANTIZE, pair[:1], pair[1:],
                           schema.BuiltinOptions.QuantizeOptions, schema.QuantizeOptionsT())
            (before if reads else after).append(op)
    if not remapped:
        return []
    changed = [name_of(graph, index) for index in remapped]
    for index in remapped:
        graph.tensors[index].name = f"{name_of(graph, index)}/int16".encode()
    graph.inputs = [remapped.get(int(i), int(i)) for i in graph.inputs]
    graph.outputs = [remapped.get(int(i), int(i)) for i in graph.outputs]
    for signature in model.signatureDefs or ():
        for entry in (signature.inputs or []) + (signature.outputs or []):
            entry.tensorIndex = remapped.get(int(entry.tensorIndex), int(entry.tensorIndex))
    graph.operators = before + list(graph.operators) + after
    flatbuffer_utils.write_model(model, str(path))
    return changed


def _matched_ends(graph: Any, ends: list[int], other: Any, other_ends: list[int]) -> list[tuple[int, int]]:
    """Pairs (index in graph, index in other) of inputs or outputs with the same name, else in order."""
    names = {name_of(other, index): index for index in other_ends}
    by_name = [(index, names[name_of(graph, index)]) for index in ends if name_of(graph, index) in names]
    if len(by_name) == len(ends):
        return by_name
    if len(ends) != len(other_ends):
        raise ValueError(f"the models have {len(ends)} and {len(other_ends)} inputs or outputs")
    return list(zip(ends, other_ends))


def _edge_tensor(graph: Any, wide: Any, edge: Any) -> int:
    """A new tensor shaped as `wide`, typed and quantized as `edge`, named as `wide` is."""
    import copy

    index = new_tensor(graph, "", list(wide.shape), edge.type)
    tensor = graph.tensors[index]
    tensor.name, tensor.shapeSignature = wide.name, wide.shapeSignature
    tensor.quantization = copy.deepcopy(edge.quantization)
    return index
