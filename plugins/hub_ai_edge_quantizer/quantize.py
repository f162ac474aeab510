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
- sparse constants densified and MediaPipe's transposed-convolution custom operator made builtin
  (hub_litert.rewrite);
- float operators the library has no int8 rule for rewritten into exact equivalents it has (equivalents.py).
What each of these fixed, measured on MediaPipe's models, is in docs/notes.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hub.declarations import StepContext, defaults_of
from hub.errors import StepFailedError, UsageError
from hub_ai_edge_quantizer import OPTIONS, RANGES, RECIPES
from hub_ai_edge_quantizer.equivalents import rewrite_for_quantizer
from hub_litert.rewrite import builtin_of, densify_constants, drop_unused_tensors, hold_constant, \
    replace_transpose_conv_bias, requantize_io, widen_float16_constants

SIGNATURE = "serving_default"


def quantize_tflite_int8(ctx: StepContext) -> Path:
    options = {**defaults_of(OPTIONS), **ctx.options}
    if options["recipe"] not in RECIPES:
        raise UsageError(f"ai-edge-quantizer-int8: recipe {options['recipe']!r} is not one of: {', '.join(RECIPES)}")
    if options["ranges"] not in RANGES:
        raise UsageError(f"ai-edge-quantizer-int8: ranges {options['ranges']!r} is not one of: {', '.join(RANGES)}")
    feeds = ctx.calibration_feeds(int(options["max_calibration_samples"]))
    if not feeds:
        raise UsageError("ai-edge-quantizer-int8 needs calibration samples: pass --calibration")
    feeds = keyed_as_the_model(ctx.input_path, feeds)
    prepared = ctx.workdir / "prepared.tflite"
    try:
        preparation = prepare_for_quantizer(ctx.input_path, prepared, feeds[0])
    except (ValueError, KeyError, IndexError, AttributeError) as error:  # a flatbuffer our rewrite does not know
        raise StepFailedError(f"the TFLite file could not be prepared for ai-edge-quantizer: "
                              f"{type(error).__name__}: {_first_line(error)}", detail=repr(error)) from error
    output = ctx.workdir / "model.int8.tflite"
    output.write_bytes(_quantized(prepared, "static_wi8_ai8", options["ranges"], feeds))
    requantized = []
    if options["recipe"] != "static_wi8_ai8":  # int16 I/O: the int8 model gives its calibrated int8 edges
        edges = output.with_name("edges.int8.tflite")
        output.rename(edges)
        output.write_bytes(_quantized(prepared, options["recipe"], options["ranges"], feeds))
        allow_general_int16_scales(output)
        requantized = requantize_io(output, edges)
        edges.unlink()
    prepared.unlink()
    integer_outputs = read_integer_outputs(output)
    _check_integer(output, bool(options["full_integer"]))
    ctx.notes.update(converter=f"ai-edge-quantizer {_version()}", recipe=options["recipe"], ranges=options["ranges"],
                     calibration_samples=len(feeds), calibration_source=Path(ctx.calibration).name, **preparation,
                     outputs_read_before_dequantize=integer_outputs,
                     **({"io_requantized_from_int16": requantized} if requantized else {}))
    return output


def _quantized(prepared: Path, recipe_name: str, ranges: str, feeds: list[dict[str, np.ndarray]]) -> bytes:
    from ai_edge_quantizer import quantizer, recipe

    engine = quantizer.Quantizer(str(prepared))
    engine.load_quantization_recipe(recipe.static_wi8_ai8())
    if recipe_name == "static_wi8_ai16":
        # 16-bit activations for every operator the library has an int16 kernel for; the others (HARD_SWISH)
        # keep the int8 entry above, which a separate pattern leaves in place (the library's own
        # static_wi8_ai16 leaves them float), and the library requantizes between the two
        engine.add_static_config(".+", "*", activation_num_bits=16, weight_num_bits=8)
    try:
        calibration = (_min_max_ranges(engine, feeds) if ranges == "min-max" else
                       engine.calibrate({SIGNATURE: [_float_feed(feed) for feed in feeds]}))
        return bytes(engine.quantize(calibration).quantized_model)
    except Exception as error:  # the library raises plain exceptions for ops and shapes it does not handle
        raise StepFailedError(f"ai-edge-quantizer failed: {type(error).__name__}: {_first_line(error)}",
                              detail=repr(error)) from error


def keyed_as_the_model(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The feeds keyed by the model's own input names (its signature's, else its tensors'), matched by name, else
    by position: a converter may rename inputs (onnx2tf writes TensorFlow's "serving_default_input_2:0" as
    "input_2__0"), and the library's calibration looks them up by the signature's names."""
    from hub_litert.feeding import InputMismatch, input_keys, signature_names, tensor_name
    from hub_litert.interpreter import open_interpreter

    interpreter = open_interpreter(path, delegates=False)
    names, inputs = signature_names(interpreter), interpreter.get_input_details()
    try:
        keys = input_keys(inputs, feeds[0], names)
    except InputMismatch as error:
        raise StepFailedError(f"ai-edge-quantizer-int8: {error.args[0]}") from error
    return [{tensor_name(detail, names): feed[key] for detail, key in zip(inputs, keys)} for feed in feeds]


def _min_max_ranges(engine: Any, feeds: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Each tensor's smallest and largest value over all the samples (the option ranges: min-max), calibrated
    sample by sample and merged: the library only keeps a moving average of each sample's extremes (weight 0.95
    on the past), which clips every value above the last samples' typical peak. On real models the average did
    better (docs/notes.md), so it stays the default."""
    merged: dict[str, Any] = {}
    for feed in feeds:
        for tensor, ranges in engine.calibrate({SIGNATURE: [_float_feed(feed)]}).items():
            known = merged.setdefault(tensor, dict(ranges))
            if "min" in ranges and "max" in ranges:
                known["min"] = np.minimum(known["min"], ranges["min"])
                known["max"] = np.maximum(known["max"], ranges["max"])
    return merged


def prepare_for_quantizer(source: Path, prepared: Path, sample: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write the copy the library can quantize (see the module's docstring); what was changed, for the notes."""
    from ai_edge_litert.tools import flatbuffer_utils

    shapes = runtime_shapes(source, sample)
    model = flatbuffer_utils.read_model(str(source))
    renamed = 0
    for code in model.operatorCodes:
        if code.builtinCode < code.deprecatedBuiltinCode:
            code.builtinCode, renamed = code.deprecatedBuiltinCode, renamed + 1
    densified = densify_constants(model, source)
    replaced = replace_transpose_conv_bias(model)
    widened = widen_float16_constants(model)
    static = make_shapes_static(model, shapes)
    folded = fold_shape_operators(model)
    equivalents = rewrite_for_quantizer(model)
    drop_unused_tensors(model)
    signed = not model.signatureDefs
    if signed:
        model.signatureDefs = [_serving_signature(model)]
    flatbuffer_utils.write_model(model, str(prepared))
    return {"operator_codes_renamed": renamed, "sparse_constants_densified": densified,
            "transpose_conv_bias_replaced": replaced, "float16_constants_widened": widened,
            "inputs_made_static": static, "shape_operators_folded": folded, "operators_rewritten_as_quantizable": equivalents,
            "signature_added": signed}


def allow_general_int16_scales(path: Path) -> int:
    """Mark every ADD and SUB as taking any int16 scales. The schema's default (pot_scale_int16, true) selects
    TFLite's older int16 kernel, which takes power-of-two scales only and refuses the file ("add.cc:
    input1_shift == 0 || input2_shift == 0"); the library leaves the default, TFLite's converter clears it in its
    16x8 mode. Rewrites `path`; returns how many operators changed."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model, changed = flatbuffer_utils.read_model(str(path)), 0
    kinds = {schema.BuiltinOperator.ADD: (schema.BuiltinOptions.AddOptions, schema.AddOptionsT),
             schema.BuiltinOperator.SUB: (schema.BuiltinOptions.SubOptions, schema.SubOptionsT)}
    for graph in model.subgraphs:
        for op in graph.operators:
            kind = kinds.get(builtin_of(model, op))
            if kind is None:
                continue
            if op.builtinOptions is None:
                op.builtinOptionsType, op.builtinOptions = kind[0], kind[1]()
            if op.builtinOptions.potScaleInt16:
                op.builtinOptions.potScaleInt16, changed = False, changed + 1
    flatbuffer_utils.write_model(model, str(path))
    return changed


def read_integer_outputs(path: Path) -> list[str]:
    """Give the model the int8 outputs it computes: the library ends an output that other operators also read
    (Basic Pitch's pitch contour feeds its note head) with a DEQUANTIZE to float32. The graph and its signature
    then output the int8 tensor itself, and the DEQUANTIZE goes when nothing else reads it. Returns the names
    of the outputs so changed."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    graph, rewired = model.subgraphs[0], {}
    producers = {int(op.outputs[0]): op for op in graph.operators if op.outputs is not None and len(op.outputs)}
    for output in graph.outputs:
        op = producers.get(int(output))
        if op is None or builtin_of(model, op) != schema.BuiltinOperator.DEQUANTIZE:
            continue
        source = int(op.inputs[0])
        if graph.tensors[source].type == schema.TensorType.INT8 and graph.tensors[source].quantization is not None:
            rewired[int(output)] = source
    if not rewired:
        return []
    graph.outputs = [rewired.get(int(i), int(i)) for i in graph.outputs]
    for signature in model.signatureDefs or ():
        for entry in signature.outputs or ():
            entry.tensorIndex = rewired.get(int(entry.tensorIndex), int(entry.tensorIndex))
    read = {int(i) for op in graph.operators for i in (op.inputs if op.inputs is not None else ())}
    graph.operators = [op for op in graph.operators
                       if not (op.outputs is not None and int(op.outputs[0]) in rewired
                               and int(op.outputs[0]) not in read)]
    names = sorted(_tensor_name(graph.tensors[source]) for source in rewired.values())
    drop_unused_tensors(model)
    flatbuffer_utils.write_model(model, str(path))
    return names


def _tensor_name(tensor: Any) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


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
        if builtin_of(model, op) != schema.BuiltinOperator.SHAPE:
            kept.append(op)
            continue
        result = graph.tensors[op.outputs[0]]
        dtype = np.int64 if result.type == schema.TensorType.INT64 else np.int32
        hold_constant(model, result, np.asarray(graph.tensors[op.inputs[0]].shape, dtype))
        folded += 1
    graph.operators = kept
    return folded


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
    # integer inputs (token ids, byte values) are no float edge to quantize: they stay as the source has them
    if any(dtype.startswith(("float", "bfloat")) for dtype in inputs + outputs):
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
