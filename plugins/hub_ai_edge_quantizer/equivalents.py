"""Float operators ai-edge-quantizer has no int8 rule for, rewritten into exact equivalents it quantizes.

The library quantizes a fixed list of operators and leaves every other one float, between a DEQUANTIZE and a
QUANTIZE; a model with one such island is not fully integer and cannot run on an int8-only accelerator. Common
ones move or select values only, and each has an exact equivalent the library knows:
- EXPAND_DIMS and SQUEEZE (every Keras Conv1D writes them around its CONV_2D) -> RESHAPE to the static shape;
- NEG -> MUL by -1; SQUARE -> MUL of the tensor by itself;
- REDUCE_MAX -> -REDUCE_MIN(-x);
- ONE_HOT with constant depth and values, along the last axis -> GATHER from the table of its rows (an index
  outside [0, depth), which ONE_HOT turns into a row of "off" values, makes GATHER fail at run time: the step
  then fails, never silently);
- DEPTH_TO_SPACE -> RESHAPE, TRANSPOSE, RESHAPE (TensorFlow's own definition of the operator);
- MINIMUM -> -MAXIMUM(-a, -b); RELU_0_TO_1 (a hard sigmoid's clamp, as MobileNetV3's squeeze-excitation
  blocks come out of onnx2tf), RELU6 and RELU_N1_TO_1 standing alone -> MAXIMUM(-MAXIMUM(-x, -high), low).
One operator it does quantize fails at run time: int8 DIV refuses any divisor that rounds to its zero point
("div.cc: data[i] != zero_point"), which a divisor calibrated from zero up does. A division by a square root
(LayerNorm's and RMSNorm's, and onnx2tf's form of ONNX's Reciprocal of one) becomes a multiplication by RSQRT,
whose result is never zero (MagiKa's normalization failed so).
Only float32 operators of the main graph are rewritten, after shapes are made static.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import numpy as np

from hub_litert.rewrite import builtin_of, hold_constant, name_of, new_operator, new_tensor, opcode_index


# the clamps' bounds, by builtin code (schema.fbs: RELU_N1_TO_1 20, RELU6 21, RELU_0_TO_1 152)
CLAMPS = {20: (-1.0, 1.0), 21: (0.0, 6.0), 152: (0.0, 1.0)}


def rewrite_for_quantizer(model: Any) -> dict[str, int]:
    """Rewrite the main graph's float operators that have an equivalent (see the module's docstring); how many of
    each kind were rewritten."""
    from ai_edge_litert import schema_py_generated as schema

    rewriters: dict[int, Callable[[Any, Any, Any], list[Any] | None]] = {
        schema.BuiltinOperator.EXPAND_DIMS: _as_reshape, schema.BuiltinOperator.SQUEEZE: _as_reshape,
        schema.BuiltinOperator.NEG: _negation, schema.BuiltinOperator.SQUARE: _square,
        schema.BuiltinOperator.REDUCE_MAX: _max_as_min, schema.BuiltinOperator.ONE_HOT: _one_hot_as_gather,
        schema.BuiltinOperator.DEPTH_TO_SPACE: _depth_to_space,
        schema.BuiltinOperator.MINIMUM: _minimum, **{builtin: _clamp for builtin in CLAMPS}}
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    graph, operators, rewritten = model.subgraphs[0], [], Counter[str]()
    for op in graph.operators:
        builtin = builtin_of(model, op)
        output = graph.tensors[op.outputs[0]] if op.outputs is not None and len(op.outputs) == 1 else None
        replacement = None
        if builtin in rewriters and output is not None and output.type == schema.TensorType.FLOAT32:
            replacement = rewriters[builtin](model, graph, op)
        if replacement is None:
            operators.append(op)
            continue
        operators.extend(replacement)
        rewritten[names[builtin]] += 1
    graph.operators = operators
    rewritten["DIV"] = _divisions_by_roots_as_products(model, graph)
    return {name: count for name, count in sorted(rewritten.items()) if count}


def _minimum(model: Any, graph: Any, op: Any) -> list[Any]:
    from ai_edge_litert import schema_py_generated as schema

    operators, negated = [], []
    for index in (int(i) for i in op.inputs):
        tensor, values = graph.tensors[index], _constant(model, graph, index)
        result = new_tensor(graph, f"{name_of(graph, index)}/negated", list(tensor.shape), tensor.type)
        if values is not None:
            hold_constant(model, graph.tensors[result], -values.reshape(list(tensor.shape)))
        else:
            operators.append(_scaled(model, graph, index, result, -1.0))
        negated.append(result)
    larger = _like(graph, int(op.outputs[0]), "negated_min")
    operators.append(new_operator(model, schema.BuiltinOperator.MAXIMUM, negated, [larger],
                                  schema.BuiltinOptions.MaximumMinimumOptions, schema.MaximumMinimumOptionsT()))
    return operators + [_scaled(model, graph, larger, int(op.outputs[0]), -1.0)]


def _clamp(model: Any, graph: Any, op: Any) -> list[Any]:
    """MAXIMUM(-MAXIMUM(-x, -high), low): the first operator reading x is a MUL. The library gives MAXIMUM's
    inputs its output's scale, and where x is also a graph output it then outputs a copy requantized to that
    range (a clamp at zero lost every negative value of the output)."""
    from ai_edge_litert import schema_py_generated as schema

    low, high = CLAMPS[builtin_of(model, op)]
    source, output = int(op.inputs[0]), int(op.outputs[0])
    negated, floored, capped = (_like(graph, output, suffix) for suffix in ("negated", "floored", "capped"))

    def maximum(a: int, bound: float, result: int) -> Any:
        constant = new_tensor(graph, f"{name_of(graph, result)}/bound", [], schema.TensorType.FLOAT32)
        hold_constant(model, graph.tensors[constant], np.asarray(bound, np.float32))
        return new_operator(model, schema.BuiltinOperator.MAXIMUM, [a, constant], [result],
                            schema.BuiltinOptions.MaximumMinimumOptions, schema.MaximumMinimumOptionsT())

    return [_scaled(model, graph, source, negated, -1.0), maximum(negated, -high, floored),
            _scaled(model, graph, floored, capped, -1.0), maximum(capped, low, output)]


def _divisions_by_roots_as_products(model: Any, graph: Any) -> int:
    """Each SQRT whose result only divides (through reshapes) becomes RSQRT, and those DIVs become MULs; how
    many DIVs changed."""
    from ai_edge_litert import schema_py_generated as schema

    readers: dict[int, list[tuple[Any, int]]] = {}
    for op in graph.operators:
        for position, index in enumerate(op.inputs if op.inputs is not None else ()):
            readers.setdefault(int(index), []).append((op, position))
    outputs, changed = {int(i) for i in graph.outputs}, 0
    for op in graph.operators:
        if builtin_of(model, op) != schema.BuiltinOperator.SQRT:
            continue
        divisions = _divisions_reading(model, int(op.outputs[0]), readers, outputs)
        if not divisions:
            continue
        op.opcodeIndex = opcode_index(model, schema.BuiltinOperator.RSQRT)
        for division in divisions:
            options = schema.MulOptionsT()
            if division.builtinOptions is not None:
                options.fusedActivationFunction = division.builtinOptions.fusedActivationFunction
            division.opcodeIndex = opcode_index(model, schema.BuiltinOperator.MUL)
            division.builtinOptionsType, division.builtinOptions = schema.BuiltinOptions.MulOptions, options
        changed += len(divisions)
    return changed


def _divisions_reading(model: Any, index: int, readers: dict[int, list[tuple[Any, int]]],
                       outputs: set[int]) -> list[Any]:
    """The DIVs that read `index` (through RESHAPEs) as their divisor, if nothing else reads it; else []."""
    from ai_edge_litert import schema_py_generated as schema

    found: list[Any] = []
    for op, position in readers.get(index, []):
        builtin = builtin_of(model, op)
        if builtin == schema.BuiltinOperator.DIV and position == 1:
            found.append(op)
        elif builtin == schema.BuiltinOperator.RESHAPE and position == 0 and int(op.outputs[0]) not in outputs:
            further = _divisions_reading(model, int(op.outputs[0]), readers, outputs)
            if not further:
                return []
            found.extend(further)
        else:
            return []
    return [] if index in outputs else found


def _as_reshape(model: Any, graph: Any, op: Any) -> list[Any]:
    return [_reshape(model, graph, int(op.inputs[0]), int(op.outputs[0]))]


def _negation(model: Any, graph: Any, op: Any) -> list[Any]:
    return [_scaled(model, graph, int(op.inputs[0]), int(op.outputs[0]), -1.0)]


def _square(model: Any, graph: Any, op: Any) -> list[Any]:
    from ai_edge_litert import schema_py_generated as schema

    source = int(op.inputs[0])
    return [new_operator(model, schema.BuiltinOperator.MUL, [source, source], [int(op.outputs[0])],
                         schema.BuiltinOptions.MulOptions, schema.MulOptionsT())]


def _max_as_min(model: Any, graph: Any, op: Any) -> list[Any]:
    from ai_edge_litert import schema_py_generated as schema

    source, axes, output = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
    negated = _like(graph, source, "negated")
    smallest = _like(graph, output, "negated_min")
    reducer = new_operator(model, schema.BuiltinOperator.REDUCE_MIN, [negated, axes], [smallest],
                           schema.BuiltinOptions.ReducerOptions, op.builtinOptions)
    return [_scaled(model, graph, source, negated, -1.0), reducer, _scaled(model, graph, smallest, output, -1.0)]


def _one_hot_as_gather(model: Any, graph: Any, op: Any) -> list[Any] | None:
    from ai_edge_litert import schema_py_generated as schema

    indices, depth, on, off = (int(i) for i in op.inputs)
    values = [_constant(model, graph, i) for i in (depth, on, off)]
    axis = op.builtinOptions.axis if op.builtinOptions is not None else -1
    rank = len(graph.tensors[op.outputs[0]].shape)
    if any(value is None for value in values) or axis not in (-1, rank - 1):
        return None
    count, hot, cold = (np.asarray(value).reshape(-1)[0] for value in values)
    table = new_tensor(graph, f"{name_of(graph, int(op.outputs[0]))}/rows", [int(count), int(count)],
                       schema.TensorType.FLOAT32)
    hold_constant(model, graph.tensors[table], (cold + (hot - cold) * np.eye(int(count))).astype(np.float32))
    options = schema.GatherOptionsT()
    options.axis, options.batchDims = 0, 0
    return [new_operator(model, schema.BuiltinOperator.GATHER, [table, indices], [int(op.outputs[0])],
                         schema.BuiltinOptions.GatherOptions, options)]


def _depth_to_space(model: Any, graph: Any, op: Any) -> list[Any] | None:
    from ai_edge_litert import schema_py_generated as schema

    source, output = int(op.inputs[0]), int(op.outputs[0])
    shape = list(graph.tensors[source].shape)
    block = int(op.builtinOptions.blockSize)
    if len(shape) != 4 or min(shape) < 1:
        return None
    batch, height, width, depth = shape
    blocks = new_tensor(graph, f"{name_of(graph, output)}/blocks",
                        [batch, height, width, block, block, depth // (block * block)], schema.TensorType.FLOAT32)
    moved = new_tensor(graph, f"{name_of(graph, output)}/blocks_moved",
                       [batch, height, block, width, block, depth // (block * block)], schema.TensorType.FLOAT32)
    order = new_tensor(graph, f"{name_of(graph, output)}/order", [6], schema.TensorType.INT32)
    hold_constant(model, graph.tensors[order], np.asarray([0, 1, 3, 2, 4, 5], np.int32))
    transpose = new_operator(model, schema.BuiltinOperator.TRANSPOSE, [blocks, order], [moved],
                             schema.BuiltinOptions.TransposeOptions, schema.TransposeOptionsT())
    return [_reshape(model, graph, source, blocks), transpose, _reshape(model, graph, moved, output)]


def _reshape(model: Any, graph: Any, source: int, output: int) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    target = [int(n) for n in graph.tensors[output].shape]
    shape = new_tensor(graph, f"{name_of(graph, output)}/shape", [len(target)], schema.TensorType.INT32)
    hold_constant(model, graph.tensors[shape], np.asarray(target, np.int32))
    options = schema.ReshapeOptionsT()
    options.newShape = target
    return new_operator(model, schema.BuiltinOperator.RESHAPE, [source, shape], [output],
                        schema.BuiltinOptions.ReshapeOptions, options)


def _scaled(model: Any, graph: Any, source: int, output: int, factor: float) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    constant = new_tensor(graph, f"{name_of(graph, output)}/factor", [], schema.TensorType.FLOAT32)
    hold_constant(model, graph.tensors[constant], np.asarray(factor, np.float32))
    return new_operator(model, schema.BuiltinOperator.MUL, [source, constant], [output],
                        schema.BuiltinOptions.MulOptions, schema.MulOptionsT())


def _like(graph: Any, index: int, suffix: str) -> int:
    tensor = graph.tensors[index]
    return new_tensor(graph, f"{name_of(graph, index)}/{suffix}", list(tensor.shape), tensor.type)


def _constant(model: Any, graph: Any, index: int) -> np.ndarray | None:
    from ai_edge_litert import schema_py_generated as schema

    tensor = graph.tensors[index]
    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    if data is None or not len(data):
        return None
    dtypes = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT32: np.int32,
              schema.TensorType.INT64: np.int64}
    if tensor.type not in dtypes:
        return None
    return np.frombuffer(bytes(bytearray(data)), dtypes[tensor.type])
