"""One-shot magnitude pruning of a tf-keras HDF5 model with tfmot.

tfmot applies its masks inside training steps (the UpdatePruningStep callback). With a constant-sparsity schedule
beginning at step 0, a single pass of fit() with a zero learning rate sets every mask from the weights'
magnitudes and changes nothing else; strip_pruning then leaves plain layers whose kernels hold the zeros.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hub.declarations import StepContext, defaults_of
from hub.errors import MissingDependencyError, UsageError
from hub.kit import exempt_layers
from hub.report import compressed_size
from hub_tfmot import PRUNE_OPTIONS


def prune_keras_h5(ctx: StepContext) -> Path:
    """keras-h5 fp32 -> +pruned: each prunable Conv/Dense kernel reaches `sparsity` zeros (tfmot prunes per
    layer: scope "global" is refused rather than silently done per layer)."""
    options = {**defaults_of(PRUNE_OPTIONS), **ctx.options}
    sparsity = float(options["sparsity"])
    if not 0 <= sparsity < 1:
        raise UsageError(f"option sparsity={sparsity} must be a fraction in [0, 1)")
    if options["scope"] != "layer":
        raise UsageError("tfmot prunes each layer to the same sparsity: use scope \"layer\" for tfmot-prune, or "
                         "convert to ONNX and prune there for global pruning")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # what tfmot sets on import anyway; explicit for this worker
    try:
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as error:
        raise MissingDependencyError("tfmot-prune needs tensorflow-model-optimization and tf-keras: "
                                     "pip install 'conversion-hub[tfmot]'", detail=str(error)) from error
    try:
        from hub_tensorflow.models import load_keras_h5_model
    except ImportError as error:
        raise MissingDependencyError("tfmot-prune loads HDF5 models through the tensorflow plugin: "
                                     "pip install 'conversion-hub[tf]'", detail=str(error)) from error

    model = load_keras_h5_model(ctx.input_path, ctx.options)
    layers = [layer for layer in model.layers if _kernel(layer) is not None]
    exempt = exempt_layers([(layer.name, isinstance(layer, tf_keras.layers.DepthwiseConv2D)) for layer in layers],
                           options)
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, end_step=-1, frequency=1)
    prunable = {layer.name for layer in layers if layer.name not in exempt}

    def wrap(layer: Any) -> Any:
        # the layer itself, wrapped or not: the clone shares its weights instead of re-initializing them
        if layer.name in prunable:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    wrapped = tf_keras.models.clone_model(model, clone_function=wrap)
    feeds = _samples(ctx, model, options)
    wrapped.compile(optimizer=tf_keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    targets = wrapped.predict(feeds, verbose=0)
    wrapped.fit(feeds, targets, epochs=1, batch_size=len(_first(feeds)), verbose=0,
                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    output = ctx.workdir / "model.h5"
    stripped.save(str(output), save_format="h5", include_optimizer=False)

    per_layer, zeros, total = {}, 0, 0
    for layer in stripped.layers:
        kernel = _kernel(layer)
        if kernel is None:
            continue
        values = np.asarray(kernel)
        per_layer[layer.name] = round(float((values == 0).mean()), 4)
        if layer.name in prunable:
            zeros, total = zeros + int((values == 0).sum()), total + values.size
    ctx.notes.update(method="tfmot prune_low_magnitude, ConstantSparsity, one shot", requested_sparsity=sparsity,
                     sparsity=round(zeros / max(total, 1), 4), layer_sparsity=per_layer, exempt_layers=exempt,
                     layers_pruned=len(prunable), **compressed_size(output))
    return output


def _kernel(layer: Any) -> Any:
    for attribute in ("depthwise_kernel", "kernel"):
        value = getattr(layer, attribute, None)
        if value is not None:
            return value
    return None


def _samples(ctx: StepContext, model: Any, options: dict[str, Any]) -> Any:
    """The calibration samples (only their count matters: the learning rate is zero), else seeded random ones."""
    names = [tensor.name.split(":")[0] for tensor in model.inputs]
    if ctx.calibration is not None:
        with np.load(ctx.calibration, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        if len(arrays) == 1 and len(names) == 1:
            return next(iter(arrays.values()))[:64]
        if all(name in arrays for name in names):
            return [arrays[name][:64] for name in names]
    rng = np.random.default_rng(int(options["seed"]))
    shapes = [tuple(d or 1 for d in tensor.shape[1:]) for tensor in model.inputs]
    arrays = [rng.standard_normal((int(options["random_samples"]), *shape)).astype("float32") for shape in shapes]
    return arrays[0] if len(arrays) == 1 else arrays


def _first(feeds: Any) -> Any:
    return feeds[0] if isinstance(feeds, list) else feeds
