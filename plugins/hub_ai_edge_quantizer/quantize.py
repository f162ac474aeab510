"""A float TFLite model -> full-integer int8 with ai-edge-quantizer.

The library needs what old or hand-built flatbuffers may lack, so the step first writes a prepared copy:
- operator codes that name the operator in `builtin_code` (files written before that field existed keep it in
  `deprecated_builtin_code` and leave 0, ADD, in the other: the library then quantized MediaPipe's convolution
  weights as if they were an addition's activations, and the interpreter refused the file);
- float32 weights where the model keeps float16 constants behind DEQUANTIZE operators (the library quantizes
  float32 tensors; the float16 copies are dropped, or the file would keep them beside the int8 ones);
- static shapes (those the tensors have on the samples: a batch of one), with each SHAPE operator replaced by
  the constant it then computes: the library leaves SHAPE reading a float copy of its input (a dynamic-batch
  Flatten computes its shape so), and the model would not be fully integer;
- a serving signature, which the library's calibration runs through.
What each of these fixed, measured on MediaPipe's models, is in docs/notes.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hub.declarations import StepContext, defaults_of
from hub.errors import StepFailedError, UsageError
from hub_ai_edge_quantizer import OPTIONS, RECIPES

SIGNATURE = "serving_default"


def quantize_tflite_int8(ctx: StepContext) -> Path:
    from ai_edge_quantizer import quantizer, recipe

    options = {**defaults_of(OPTIONS), **ctx.options}
    if options["recipe"] not in RECIPES:
        raise UsageError(f"ai-edge-quantizer-int8: recipe {options['recipe']!r} is not one of: {', '.join(RECIPES)}")
    feeds = ctx.calibration_feeds(int(options["max_calibration_samples"]))
    if not feeds:
        raise UsageError("ai-edge-quantizer-int8 needs calibration samples: pass --calibration")
    prepared = ctx.workdir / "prepared.tflite"
    try:
        preparation = prepare_for_quantizer(ctx.input_path, prepared, feeds[0])
    except (ValueError, KeyError, IndexError, AttributeError) as error:  # a flatbuffer our rewrite does not know
        raise StepFailedError(f"the TFLite file could not be prepared for ai-edge-quantizer: "
                              f"{type(error).__name__}: {_first_line(error)}", detail=repr(error)) from error
    engine = quantizer.Quantizer(str(prepared))
    engine.load_quantization_recipe(getattr(recipe, options["recipe"])())
    try:
        calibration = engine.calibrate({SIGNATURE: [_float_feed(feed) for feed in feeds]})
        quantized = engine.quantize(calibration).quantized_model
    except Exception as error:  # the library raises plain exceptions for ops and shapes it does not handle
        raise StepFailedError(f"ai-edge-quantizer failed: {type(error).__name__}: {_first_line(error)}",
                              detail=repr(error)) from error
    output = ctx.workdir / "model.int8.tflite"
    output.write_bytes(bytes(quantized))
    prepared.unlink()
    _check_integer(output, bool(options["full_integer"]))
    ctx.notes.update(converter=f"ai-edge-quantizer {_version()}", recipe=options["recipe"],
                     calibration_samples=len(feeds), calibration_source=Path(ctx.calibration).name, **preparation)
    return output


def prepare_for_quantizer(source: Path, prepared: Path, sample: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write the copy the library can quantize (see the module's docstring); what was changed, for the notes."""
    from ai_edge_litert.tools import flatbuffer_utils

    shapes = runtime_shapes(source, sample)
    model = flatbuffer_utils.read_model(str(source))
    renamed = 0
    for code in model.operatorCodes:
        if code.builtinCode < code.deprecatedBuiltinCode:
            code.builtinCode, renamed = code.deprecatedBuiltinCode, renamed + 1
    widened = widen_float16_constants(model)
    static = make_shapes_static(model, shapes)
    folded = fold_shape_operators(model)
    drop_unused_tensors(model)
    signed = not model.signatureDefs
    if signed:
        model.signatureDefs = [_serving_signature(model)]
    flatbuffer_utils.write_model(model, str(prepared))
    return {"operator_codes_renamed": renamed, "float16_constants_widened": widened,
            "inputs_made_static": static, "shape_operators_folded": folded, "signature_added": signed}


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
            if (_builtin(model, op) != schema.BuiltinOperator.DEQUANTIZE or source.type != schema.TensorType.FLOAT16
                    or data is None or not len(data)):
                kept.append(op)
                continue
            _hold_constant(model, graph.tensors[op.outputs[0]],
                           np.frombuffer(bytes(bytearray(data)), np.float16).astype(np.float32))
            widened += 1
        graph.operators = kept
    return widened


def runtime_shapes(model_path: Path, feed: dict[str, np.ndarray]) -> dict[int, tuple[int, ...]]:
    """The shape of every tensor of the main graph when the model runs on a sample (inputs resized to it)."""
    from hub_litert.feeding import signature_names, tensor_name
    from hub_litert.interpreter import open_interpreter

    interpreter = open_interpreter(model_path, delegates=False)
    names = signature_names(interpreter)
    for detail in interpreter.get_input_details():
        shape = feed[tensor_name(detail, names)].shape
        if tuple(detail["shape"]) != shape:
            interpreter.resize_tensor_input(detail["index"], list(shape))
    interpreter.allocate_tensors()
    return {int(d["index"]): tuple(int(n) for n in d["shape"]) for d in interpreter.get_tensor_details()}


def make_shapes_static(model: Any, shapes: dict[int, tuple[int, ...]]) -> list[str]:
    """Give the main graph's tensors the static shapes they have on the samples; the inputs that were dynamic."""
    graph, changed = model.subgraphs[0], []
    for index, tensor in enumerate(graph.tensors):
        if index not in shapes:
            continue
        if index in graph.inputs and (tensor.shapeSignature is not None and any(int(d) < 0 for d in
                                                                                   tensor.shapeSignature)):
            changed.append(tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name))
        tensor.shape, tensor.shapeSignature = list(shapes[index]), None
    return changed


def fold_shape_operators(model: Any) -> int:
    """Replace each SHAPE operator of the main graph by the constant it computes (shapes are static by now);
    returns how many."""
    from ai_edge_litert import schema_py_generated as schema

    graph, kept, folded = model.subgraphs[0], [], 0
    for op in graph.operators:
        if _builtin(model, op) != schema.BuiltinOperator.SHAPE:
            kept.append(op)
            continue
        result = graph.tensors[op.outputs[0]]
        dtype = np.int64 if result.type == schema.TensorType.INT64 else np.int32
        _hold_constant(model, result, np.asarray(graph.tensors[op.inputs[0]].shape, dtype))
        folded += 1
    graph.operators = kept
    return folded


def _hold_constant(model: Any, tensor: Any, values: np.ndarray) -> None:
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(values.tobytes(), np.uint8)
    model.buffers.append(buffer)
    tensor.buffer = len(model.buffers) - 1


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


def _builtin(model: Any, op: Any) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _serving_signature(model: Any) -> Any:
    """A signature over the main graph's inputs and outputs, named as the hub names them (tensor names without
    TF's decoration), so that calibration feeds and outputs keep their names."""
    from ai_edge_litert import schema_py_generated as schema
    from hub_litert.feeding import tensor_name

    graph = model.subgraphs[0]

    def tensor_maps(indices: Any) -> list[Any]:
        maps = []
        for index in indices:
            entry = schema.TensorMapT()
            raw = graph.tensors[index].name
            entry.name = tensor_name({"index": int(index), "name": raw.decode() if isinstance(raw, bytes) else raw})
            entry.tensorIndex = int(index)
            maps.append(entry)
        return maps

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE, 0
    signature.inputs, signature.outputs = tensor_maps(graph.inputs), tensor_maps(graph.outputs)
    return signature


def _float_feed(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value.astype(np.float32) if value.dtype.kind == "f" else value for name, value in feed.items()}


def _check_integer(path: Path, full_integer: bool) -> None:
    from hub_litert.interpreter import float_operators, io_dtypes

    inputs, outputs = io_dtypes(path)
    if set(inputs + outputs) != {"int8"}:
        raise StepFailedError(f"ai-edge-quantizer's model has {inputs} inputs and {outputs} outputs, not int8: "
                              "an input or output stayed float")
    stayed_float = float_operators(path) if full_integer else []
    if stayed_float:
        raise StepFailedError(f"the model cannot be made fully integer: {len(stayed_float)} operator(s) stayed "
                              "float: " + "; ".join(stayed_float))


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


def _version() -> str:
    from importlib.metadata import version

    return version("ai-edge-quantizer")
