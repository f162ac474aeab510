"""The "tensorflow" backend: Keras models (.keras with Keras 3, .h5 with tf-keras) called on each sample, and
SavedModels through their serving_default signature. Outputs come back in the model's order, flattened."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from hub import kit
from hub.errors import UnsupportedModelError, UsageError
from hub_tensorflow.describe import output_order, serving_signature
from hub_tensorflow.detect import is_keras_archive, is_keras_h5, is_savedmodel
from hub_tensorflow.models import load_keras_h5_model, load_keras_model

Feed = dict[str, np.ndarray]
Inference = Callable[[Feed], list[np.ndarray]]
WARM_UP_RUNS = 3


def run_samples(model_path: Path, samples: list[Feed], threads: int,
                options: Mapping[str, Any] | None = None) -> list[list[np.ndarray]]:
    """One list of output arrays per batch-1 sample."""
    infer = load_inference(Path(model_path), threads, options)
    return [infer(sample) for sample in samples]


def output_names(model_path: Path) -> list[str]:
    """A SavedModel's serving outputs in the order run_samples returns them; nothing for Keras files, whose
    flattened outputs carry no names verification could rely on."""
    if not is_savedmodel(Path(model_path)):
        return []
    return output_order(serving_signature(Path(model_path)).structured_outputs)


def median_latency_ms(model_path: Path, sample: Feed, threads: int, repeats: int,
                      options: Mapping[str, Any] | None = None) -> float:
    """Median milliseconds of one call, after warm-up calls that are not counted."""
    infer = load_inference(Path(model_path), threads, options)
    return kit.median_latency_ms(lambda: infer(sample), repeats, warmup=WARM_UP_RUNS)


def load_inference(model_path: Path, threads: int, options: Mapping[str, Any] | None) -> Inference:
    import tensorflow as tf

    _set_threads(tf, threads)
    if is_savedmodel(model_path):
        return _signature_inference(serving_signature(model_path))
    if is_keras_archive(model_path):
        return _keras_inference(load_keras_model(model_path, options))
    if is_keras_h5(model_path):
        return _keras_inference(load_keras_h5_model(model_path, options))
    raise UnsupportedModelError(f"{model_path.name} is neither a Keras model nor a SavedModel")


def _keras_inference(model: Any) -> Inference:
    import tensorflow as tf

    names = [getattr(t, "name", None) for t in getattr(model, "inputs", None) or ()]
    # A traced function is what the converters see too, and much faster than eager calls per sample.
    call = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)

    def infer(sample: Feed) -> list[np.ndarray]:
        arrays = ordered_arrays(sample, names)
        outputs = call(arrays[0] if len(arrays) == 1 else arrays)
        return [np.asarray(o) for o in tf.nest.flatten(outputs)]

    return infer


def _signature_inference(signature: Any) -> Inference:
    import tensorflow as tf

    specs = signature.structured_input_signature[1]
    names = list(specs)

    def infer(sample: Feed) -> list[np.ndarray]:
        arrays = ordered_arrays(sample, names)
        feeds = {name: tf.constant(array, dtype=specs[name].dtype) for name, array in zip(names, arrays)}
        outputs = signature(**feeds)
        return [np.asarray(outputs[name]) for name in output_order(outputs)]

    return infer


def ordered_arrays(sample: Feed, names: list[str | None]) -> list[np.ndarray]:
    """The sample's arrays in the model's input order: by name, else by position when the counts agree."""
    if names and all(name in sample for name in names):
        return [sample[name] for name in names]
    if not names or len(sample) == len(names):
        return list(sample.values())
    raise UsageError(f"the sample has arrays {sorted(sample)} but the model's inputs are {names}")


def _set_threads(tf: Any, threads: int) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, int(threads)))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process
        pass
