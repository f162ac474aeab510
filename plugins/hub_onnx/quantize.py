"""int8 steps through onnxruntime.quantization: static (QDQ, calibrated) and dynamic (weights only)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hub.declarations import StepContext, defaults_of
from hub.errors import StepDeclinedError, UsageError
from hub.states import TensorSpec
from hub_onnx import DYNAMIC_INT8_OPTIONS, STATIC_INT8_OPTIONS
from hub_onnx.model_file import graph_inputs, is_large, iter_nodes, load_model, opset_version, save_model

Feed = dict[str, np.ndarray]
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile",
                       "distribution": "Distribution"}
QUANT_TYPES = {"uint8": "QUInt8", "int8": "QInt8", "uint16": "QUInt16", "int16": "QInt16"}
WIDER_ACTIVATION = {"uint8": "uint16", "int8": "int16", "uint16": "uint16", "int16": "int16"}


def run_static_int8(ctx: StepContext) -> Path:
    """quantize_static in QDQ format, calibrated on ctx.calibration (or seeded random inputs, with a warning);
    with widen_sensitive=N, the outputs of the N weighted nodes that lose the most in a plain quantization get
    16-bit activations; with exclude_sensitive=N, those nodes stay float."""
    options = {**defaults_of(STATIC_INT8_OPTIONS), **ctx.options}
    upgrade_for_quantization(ctx)
    model = load_model(ctx.input_path, with_weights=False)
    before_log = nodes_before_log(model) if options["float_before_log"] else []
    if options["float_before_log"] and not before_log:
        raise StepDeclinedError("float_before_log: the model has no Log, so nothing is kept float before one")
    feeds = calibration_feeds(ctx, graph_inputs(model), options)
    output = ctx.workdir / "model.int8.onnx"
    ranking = _most_sensitive(ctx, feeds, options, model,
                              max(int(options["exclude_sensitive"]), int(options["widen_sensitive"])))
    excluded = [node for node, _, _ in ranking[:int(options["exclude_sensitive"])]]
    excluded += [name for name in before_log if name not in excluded]
    widened = [tensor for _, _, tensor in ranking[:int(options["widen_sensitive"])]]
    if excluded:
        ctx.notes["kept_float"] = excluded
    if widened:
        ctx.notes["widened_to_16_bit"] = widened
    _quantize_static(ctx.input_path, output, feeds, options, model, excluded, widened)
    ctx.notes.update({key: options[key] for key in ("per_channel", "activation_type", "weight_type",
                                                    "calibrate_method", "symmetric_activations", "reduce_range")})
    ctx.notes["calibration_samples"] = len(feeds)
    ctx.notes.update(node_counts(model, output))
    return output


def nodes_before_log(model: Any) -> list[str]:
    """The names of the nodes whose results a Log reads, directly or through others: everything from the graph
    inputs to each Log (an audio model's spectrogram front end). Unnamed nodes are passed through, not named
    (the quantizer excludes nodes by name)."""
    graph = model.graph
    producers = {output: index for index, node in enumerate(graph.node) for output in node.output}
    wanted = [name for node in graph.node if node.op_type == "Log" for name in node.input]
    seen: set[int] = set()
    while wanted:
        index = producers.get(wanted.pop())
        if index is None or index in seen:
            continue
        seen.add(index)
        wanted.extend(name for name in graph.node[index].input if name)
    return [graph.node[index].name for index in sorted(seen) if graph.node[index].name]


def upgrade_for_quantization(ctx: StepContext) -> None:
    """Rewrite the step's private copy into what onnxruntime.quantization handles:

    - opset 13 at least: per-channel DequantizeLinear takes its `axis` from opset 13 on, and ONNX Runtime refuses
      the quantized file of an opset 11 or 12 model otherwise;
    - a bias shared by several Conv or Gemm nodes gets a copy per node: the quantizer names its own copies by
      appending a number that only initializers are checked against, so a copy can take the name of a node's
      output (tf2onnx's bias "conv1d_25" + "2" = the output "conv1d_252"), and ONNX Runtime then refuses the
      file ("Invalid attribute perm ... input shape = {36}").
    """
    from hub_onnx.opset import MODERN_OPSET, upgraded

    model = load_model(ctx.input_path)
    current = opset_version(model)
    unshared = unshare_biases(model)
    if current is not None and current < MODERN_OPSET:
        model = upgraded(model, MODERN_OPSET)
        ctx.notes["opset_upgraded"] = f"{current} -> {MODERN_OPSET}"
    if unshared:
        ctx.notes["biases_unshared"] = unshared
    if unshared or "opset_upgraded" in ctx.notes:
        save_model(model, ctx.input_path)


BIASED_OPS = ("Conv", "ConvTranspose", "Gemm")


def unshare_biases(model: Any) -> int:
    """Give every node but the first that shares a bias initializer its own copy; the number of copies made."""
    import onnx

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    taken = set(initializers) | {name for node in model.graph.node for name in node.output} \
        | {value.name for value in model.graph.input}
    seen: set[str] = set()
    copies = 0
    for node in model.graph.node:
        bias = node.input[2] if node.op_type in BIASED_OPS and len(node.input) > 2 else ""
        if bias not in initializers:
            continue
        if bias in seen:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[bias])
            copy.name = _free_name(f"{bias}__copy", taken)
            model.graph.initializer.append(copy)
            node.input[2] = copy.name
            copies += 1
        seen.add(bias)
    return copies


def _free_name(base: str, taken: set[str]) -> str:
    number = 1
    while f"{base}{number}" in taken:
        number += 1
    taken.add(f"{base}{number}")
    return f"{base}{number}"


def _most_sensitive(ctx: StepContext, feeds: list[Feed], options: dict[str, Any], model: Any,
                    count: int) -> list[tuple[str, float, str]]:
    """The `count` weighted nodes whose quantization loses the most signal-to-noise, measured on a plain
    quantization of the model, with the dB lost and their output tensors; noted with the ranking."""
    if count <= 0:
        return []
    from hub_onnx.sensitivity import rank_node_outputs

    probe = ctx.workdir / "probe" / "model.int8.onnx"
    probe.parent.mkdir()
    _quantize_static(ctx.input_path, probe, feeds, options, model, [], [])
    ranking = rank_node_outputs(ctx.input_path, probe, feeds[:SENSITIVITY_SAMPLES])
    ctx.notes["sensitivity"] = {node: lost for node, lost, _ in ranking[:SENSITIVITY_NOTED]}  # dB lost
    return ranking[:count]


SENSITIVITY_SAMPLES = 16
SENSITIVITY_NOTED = 20


def _quantize_static(source: Path, output: Path, feeds: list[Feed], options: dict[str, Any], model: Any,
                     excluded: list[str], widened: list[str]) -> None:
    """quantize_static with the step's options; `excluded` nodes stay float, `widened` tensors get the 16-bit
    type of the activation type's signedness (mixed precision: ONNX Runtime converts at their edges)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    wide = quant_type(WIDER_ACTIVATION[options["activation_type"]], "activation_type")
    overrides = {tensor: [{"quant_type": wide}] for tensor in widened}
    quantize_static(
        str(source), str(output), feeds_reader(feeds),
        quant_format=QuantFormat.QDQ,
        per_channel=bool(options["per_channel"]),
        reduce_range=bool(options["reduce_range"]),
        activation_type=quant_type(options["activation_type"], "activation_type"),
        weight_type=quant_type(options["weight_type"], "weight_type"),
        calibrate_method=getattr(CalibrationMethod, _choice(options["calibrate_method"], CALIBRATION_METHODS,
                                                            "calibrate_method")),
        use_external_data_format=is_large(model, source),
        nodes_to_exclude=excluded,
        extra_options={"ActivationSymmetric": bool(options["symmetric_activations"]),
                       "QDQKeepRemovableActivations": has_subgraphs(model),
                       **({"TensorQuantOverrides": overrides} if overrides else {})},
    )


def has_subgraphs(model: Any) -> bool:
    """Whether a node of the main graph holds a graph (If, Loop, Scan). ONNX Runtime's quantizer drops a Relu or
    Clip after a quantized node and rewires the main graph's readers of its output only: a subgraph that reads
    it reads the unclipped values. Silero VAD's LSTM branch (an If) read its encoder's last Relu that way, and
    its int8 speech probability drifted to cosine 0.88 whatever the activation type; kept, the Relus cost a
    little speed and nothing else."""
    from onnx import AttributeProto

    kinds = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
    return any(attribute.type in kinds for node in model.graph.node for attribute in node.attribute)


def run_dynamic_int8(ctx: StepContext) -> Path:
    """quantize_dynamic: int8 weights (per channel by default), activations quantized at run time."""
    from onnxruntime.quantization import quantize_dynamic

    options = {**defaults_of(DYNAMIC_INT8_OPTIONS), **ctx.options}
    upgrade_for_quantization(ctx)
    model = load_model(ctx.input_path, with_weights=False)
    output = ctx.workdir / "model.int8-dynamic.onnx"
    quantize_dynamic(
        str(ctx.input_path), str(output),
        per_channel=bool(options["per_channel"]),
        reduce_range=bool(options["reduce_range"]),
        weight_type=quant_type(options["weight_type"], "weight_type"),
        use_external_data_format=is_large(model, ctx.input_path),
    )
    ctx.notes.update({key: options[key] for key in ("per_channel", "weight_type", "reduce_range")})
    ctx.notes.update(node_counts(model, output))
    return output


def calibration_feeds(ctx: StepContext, inputs: tuple[TensorSpec, ...], options: dict[str, Any]) -> list[Feed]:
    """Batch-1 feeds for calibration: from the .npz in ctx.calibration, else seeded random ones (noted)."""
    if ctx.calibration is not None:
        feeds = ctx.calibration_feeds(int(options["max_calibration_samples"]))
        ctx.notes["calibration_source"] = Path(ctx.calibration).name
        return feeds
    count = int(options["random_calibration_samples"])
    ctx.notes["calibration_source"] = "random"
    ctx.notes["warning"] = (f"no calibration data given: activation ranges come from {count} random inputs and "
                            "may not match real data; pass a calibration .npz for a faithful int8 model")
    shapes = {spec.name: spec.shape for spec in ctx.inputs}
    return random_feeds(inputs, shapes, count, int(options["seed"]))


def random_feeds(inputs: tuple[TensorSpec, ...], shapes: dict[str, tuple[int | None, ...]], count: int,
                 seed: int) -> list[Feed]:
    """`count` seeded batch-1 feeds; dynamic dimensions become 1, integer inputs stay small (ids, masks)."""
    rng = np.random.default_rng(seed)

    def sample(spec: TensorSpec) -> np.ndarray:
        shape = tuple(d if d else 1 for d in shapes.get(spec.name, spec.shape))
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(bool)
        return rng.integers(0, 2, shape).astype(dtype)

    return [{spec.name: sample(spec) for spec in inputs} for _ in range(count)]


def feeds_reader(feeds: list[Feed]) -> Any:
    """A CalibrationDataReader over a list of feeds (the class needs onnxruntime, hence built here)."""
    from onnxruntime.quantization import CalibrationDataReader

    class FeedsReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._remaining = iter(feeds)

        def get_next(self) -> Feed | None:
            return next(self._remaining, None)

        def rewind(self) -> None:
            self._remaining = iter(feeds)

    return FeedsReader()


def quant_type(name: str, option: str) -> Any:
    from onnxruntime.quantization import QuantType

    return getattr(QuantType, _choice(name, QUANT_TYPES, option))


def node_counts(before: Any, output: Path) -> dict[str, Any]:
    after = load_model(output, with_weights=False)
    op_types = Counter(node.op_type for node in iter_nodes(after))
    return {"nodes_before": sum(1 for _ in iter_nodes(before)), "nodes_after": sum(op_types.values()),
            "quantized_op_types": {op: n for op, n in sorted(op_types.items())
                                   if "quantize" in op.lower() or "Integer" in op or op.startswith("QLinear")}}


def _choice(value: str, choices: dict[str, str], option: str) -> str:
    key = str(value).lower()
    if key not in choices:
        raise UsageError(f"option {option}={value!r} is not one of: {', '.join(choices)}")
    return choices[key]
