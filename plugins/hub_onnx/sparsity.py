"""Magnitude pruning and weight clipping on ONNX float32 initializers: the weights of Conv, ConvTranspose, Gemm
and MatMul. The graph is unchanged; zeros are written into the weights (dense ONNX stores them at full width, so
the notes give the gzip size, where they show)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hub.declarations import StepContext, defaults_of
from hub.errors import UsageError
from hub import kit
from hub.kit import exempt_layers, magnitude_threshold
from hub.report import compressed_size
from hub_onnx import CLIP_OPTIONS, PRUNE_OPTIONS
from hub_onnx.model_file import iter_nodes, load_model, save_model

if TYPE_CHECKING:
    import onnx

WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (1,), "MatMul": (1, 0)}  # which inputs are weights


def magnitude_prune(ctx: StepContext) -> Path:
    """onnx fp32 -> +pruned: zero the smallest-magnitude weights until `sparsity` of the prunable weights are
    zero, over all layers at once ("global") or in each layer ("layer")."""
    options = {**defaults_of(PRUNE_OPTIONS), **ctx.options}
    sparsity = float(options["sparsity"])
    if not 0 <= sparsity < 1:
        raise UsageError(f"option sparsity={sparsity} must be a fraction in [0, 1)")
    scope = str(options["scope"])
    if scope not in ("global", "layer"):
        raise UsageError(f"option scope={scope!r} is not one of: global, layer")
    model = load_model(ctx.input_path)
    weights, layers = weight_initializers(model)
    prunable, exempt = split_exempt(layers, options)
    if scope == "global" and prunable:
        magnitudes = np.concatenate([np.abs(weights[name]).ravel() for name, _ in prunable])
        threshold = magnitude_threshold(magnitudes, sparsity)
        for name, _ in prunable:
            weights[name][np.abs(weights[name]) <= threshold] = 0.0
    for name, _ in prunable if scope == "layer" else ():
        threshold = magnitude_threshold(np.abs(weights[name]).ravel(), sparsity)
        weights[name][np.abs(weights[name]) <= threshold] = 0.0
    output = write_weights(model, weights, ctx.workdir / "model.onnx")
    ctx.notes.update(method=f"magnitude (L1), {scope}", requested_sparsity=sparsity,
                     **sparsity_notes(weights, layers, prunable, exempt, model), **compressed_size(output))
    return output


def clip_weights(ctx: StepContext) -> Path:
    """onnx fp32 -> +clipped: zero every weight whose magnitude is below `threshold`."""
    options = {**defaults_of(CLIP_OPTIONS), **ctx.options}
    threshold = float(options["threshold"])
    if threshold <= 0:
        raise UsageError(f"option threshold={threshold} must be positive")
    model = load_model(ctx.input_path)
    weights, layers = weight_initializers(model)
    prunable, exempt = split_exempt(layers, options)
    for name, _ in prunable:
        weights[name][np.abs(weights[name]) < threshold] = 0.0
    output = write_weights(model, weights, ctx.workdir / "model.onnx")
    ctx.notes.update(method="clip |w| < threshold", threshold=threshold,
                     **sparsity_notes(weights, layers, prunable, exempt, model), **compressed_size(output))
    return output


def weight_initializers(model: "onnx.ModelProto") -> tuple[dict[str, np.ndarray], list[tuple[str, bool]]]:
    """The float32 initializers used as weights (a writable copy of each), and the layers in node order as
    (initializer name, depthwise)."""
    from onnx import TensorProto, numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    weights: dict[str, np.ndarray] = {}
    layers: list[tuple[str, bool]] = []
    for node in iter_nodes(model):
        for position in WEIGHT_INPUTS.get(node.op_type, ()):
            if position >= len(node.input) or node.input[position] not in initializers:
                continue
            tensor = initializers[node.input[position]]
            if tensor.data_type != TensorProto.FLOAT or len(tensor.dims) < 2 or tensor.name in weights:
                continue
            weights[tensor.name] = numpy_helper.to_array(tensor).copy()
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            depthwise = node.op_type == "Conv" and group > 1 and tensor.dims[1] == 1
            layers.append((tensor.name, depthwise))
            break  # one weight per node (MatMul: B if constant, else A)
    return weights, layers


def split_exempt(layers: list[tuple[str, bool]], options: dict[str, Any]
                 ) -> tuple[list[tuple[str, bool]], dict[str, str]]:
    exempt = exempt_layers(layers, options)
    return [layer for layer in layers if layer[0] not in exempt], exempt


def write_weights(model: "onnx.ModelProto", weights: dict[str, np.ndarray], path: Path) -> Path:
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.name in weights:
            tensor.CopyFrom(numpy_helper.from_array(weights[tensor.name], tensor.name))
    return save_model(model, path)


def sparsity_notes(weights: dict[str, np.ndarray], layers: list[tuple[str, bool]], prunable: list[tuple[str, bool]],
                   exempt: dict[str, str], model: "onnx.ModelProto") -> dict[str, Any]:
    import math

    layer_zeros = {name: (int((weights[name] == 0).sum()), weights[name].size) for name, _ in layers}
    parameters = sum(math.prod(t.dims) for t in model.graph.initializer)
    return kit.sparsity_notes(layer_zeros, {name for name, _ in prunable}, exempt, parameters)
