"""Which nodes hurt when quantized: the float model and its QDQ version run on the same feeds, and each weighted
node is charged with the signal-to-noise it loses between its input activation and its output (the error its own
quantized input and weights add), in the manner of onnxruntime.quantization.qdq_loss_debug."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Signal-to-noise above this counts as clean: a graph input (exact on both sides) and a float32 rounding
# difference must not rank as the largest losses.
CLEAN_DB = 60.0
FOLDED_ACTIVATIONS = ("Relu", "Clip")


def signal_to_noise_db(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    signal = sum(float(np.sum(np.square(r.astype(np.float64)))) for r in reference)
    noise = sum(float(np.sum(np.square(r.astype(np.float64) - c.astype(np.float64))))
                for r, c in zip(reference, candidate, strict=True))
    if noise == 0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


def _activations(model_path: Path, names: list[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, list]:
    """The named intermediate tensors of a model on each feed (exposed as extra graph outputs of a copy). In a
    QDQ model a tensor's value is what its DequantizeLinear gives: the quantizer folds a Relu into the
    quantization range and hands the Relu's name to the convolution's unclamped output."""
    import onnx
    import onnxruntime

    model = onnx.load(str(model_path))
    present = {output.name for output in model.graph.output}
    produced = {name for node in model.graph.node for name in node.output}
    dequantized = {name: f"{name}_DequantizeLinear_Output" for name in names
                   if f"{name}_DequantizeLinear_Output" in produced}
    wanted = [dequantized.get(name, name) for name in names if name in produced or name in dequantized]
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in wanted if name not in present)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    original = {value: key for key, value in dequantized.items()}
    collected: dict[str, list] = {original.get(name, name): [] for name in wanted}
    for feed in feeds:
        for name, value in zip(wanted, session.run(wanted, feed)):
            collected[original.get(name, name)].append(np.asarray(value))
    return collected


def rank_nodes(float_path: Path, quantized_path: Path, feeds: list[dict[str, np.ndarray]]) -> list[tuple[str, float]]:
    """(node name, dB of signal-to-noise lost across it) for the float model's weighted nodes, worst first."""
    return [(node, lost) for node, lost, _ in rank_node_outputs(float_path, quantized_path, feeds)]


def rank_node_outputs(float_path: Path, quantized_path: Path,
                      feeds: list[dict[str, np.ndarray]]) -> list[tuple[str, float, str]]:
    """rank_nodes with each node's output tensor (after a Relu or Clip folded into it): the tensor whose
    quantization the loss ends in."""
    import onnx

    graph = onnx.load(str(float_path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    nodes = [node for node in graph.node if node.op_type in WEIGHTED_OPS and node.name]
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    edges = {node.name: (_activation_input(node, initializers), _after_folded_activation(node.output[0], consumers))
             for node in nodes}
    names = sorted({name for pair in edges.values() for name in pair if name})
    reference = _activations(float_path, names, feeds)
    quantized = _activations(quantized_path, names, feeds)
    ranking = []
    for node, (source, result) in edges.items():
        if result not in reference or result not in quantized:
            continue
        before = signal_to_noise_db(reference[source], quantized[source]) \
            if source in reference and source in quantized else CLEAN_DB
        after = signal_to_noise_db(reference[result], quantized[result])
        ranking.append((node, round(min(before, CLEAN_DB) - min(after, CLEAN_DB), 3), result))
    return sorted(ranking, key=lambda item: (-item[1], item[0]))


def _after_folded_activation(name: str, consumers: dict[str, list[Any]]) -> str:
    """The tensor that stands for a node's output in a QDQ model: a lone Relu or Clip after it is folded into
    the quantization range, and its output name is the one that survives."""
    following = consumers.get(name, [])
    if len(following) == 1 and following[0].op_type in FOLDED_ACTIVATIONS:
        return following[0].output[0]
    return name


def _activation_input(node: Any, initializers: set[str]) -> str | None:
    """The node's first input that is computed (not a weight); a graph input counts as computed."""
    return next((name for name in node.input if name and name not in initializers), None)
