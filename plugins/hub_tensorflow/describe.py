"""describe() for the TensorFlow formats. Keras files are described from their stored config and weights
(json and h5py), so describing one never runs code from it nor needs its custom classes; a SavedModel's
serving_default signature is read with TensorFlow."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hub.errors import UnsupportedModelError
from hub.states import ModelInfo, TensorSpec
from hub_tensorflow.detect import h5_model_config
from hub_tensorflow.models import config_input_specs, keras_archive_config, load_keras_model

KERAS_WEIGHTS = "model.weights.h5"
SERVING_SIGNATURE = "serving_default"


def describe_keras(path: Path, options: dict[str, Any] | None = None) -> ModelInfo:
    config = keras_archive_config(path)
    inputs = config_input_specs(config)
    notes = [f"{config.get('class_name', '?')} model"]
    if not inputs:  # e.g. a subclassed model: only building it tells its inputs
        model = load_keras_model(path, options)
        inputs = tuple(TensorSpec(t.name, tuple(t.shape), str(t.dtype)) for t in model.inputs)
    with zipfile.ZipFile(path) as archive:
        weights = archive.read(KERAS_WEIGHTS) if KERAS_WEIGHTS in archive.namelist() else None
    return ModelInfo(format="keras", inputs=inputs, parameters=_h5_elements(io.BytesIO(weights)) if weights else None,
                     notes=tuple(notes))


def describe_keras_h5(path: Path, options: dict[str, Any] | None = None) -> ModelInfo:
    import h5py

    config = h5_model_config(Path(path))
    if config is None:
        raise UnsupportedModelError(f"{Path(path).name} is not a Keras HDF5 model (no model_config attribute)")
    with h5py.File(path, "r") as handle:
        version = handle.attrs.get("keras_version", b"?")
        weights = handle.get("model_weights")
        parameters = _h5_elements(weights) if weights is not None else None
    version = version.decode() if isinstance(version, bytes) else str(version)
    return ModelInfo(format="keras-h5", inputs=config_input_specs(config), parameters=parameters,
                     notes=(f"{config.get('class_name', '?')} model saved by Keras {version}",))


def describe_savedmodel(path: Path, options: dict[str, Any] | None = None) -> ModelInfo:
    signature = serving_signature(path)
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    return ModelInfo(
        format="savedmodel",
        inputs=tuple(_spec(name, spec) for name, spec in inputs.items()),
        outputs=tuple(_spec(name, outputs[name]) for name in output_order(outputs)),
        parameters=int(sum(np.prod(v.shape) for v in signature.variables)),
        notes=(f"signature {SERVING_SIGNATURE}",),
    )


def serving_signature(path: Path) -> Any:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:
        raise UnsupportedModelError(f"TensorFlow cannot load the SavedModel {Path(path).name}",
                                    detail=str(error)) from error
    if SERVING_SIGNATURE not in loaded.signatures:
        raise UnsupportedModelError(f"the SavedModel {Path(path).name} has no {SERVING_SIGNATURE} signature "
                                    f"(it has: {', '.join(loaded.signatures) or 'none'}); export it with one")
    signature = loaded.signatures[SERVING_SIGNATURE]
    signature._hub_owner = loaded  # the function needs its SavedModel alive
    return signature


def output_order(outputs: dict[str, Any]) -> list[str]:
    """Signature outputs in model order: output_0, output_1, ..., output_10 (numbers compared as numbers)."""
    def key(name: str) -> tuple:
        head = name.rstrip("0123456789")
        tail = name[len(head):]
        return (head, int(tail) if tail else -1, name)

    return sorted(outputs, key=key)


def _spec(name: str, spec: Any) -> TensorSpec:
    shape = tuple(None if d is None else int(d) for d in spec.shape.as_list()) if spec.shape.rank is not None else ()
    return TensorSpec(name, shape, spec.dtype.name)


def _h5_elements(source: Any) -> int:
    import h5py

    total = 0

    def count(name: str, item: Any) -> None:
        nonlocal total
        if isinstance(item, h5py.Dataset) and not name.startswith("optimizer"):
            total += int(np.prod(item.shape))

    if isinstance(source, h5py.Group):
        source.visititems(count)
    else:
        with h5py.File(source, "r") as handle:
            handle.visititems(count)
    return total
