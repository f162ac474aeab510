"""Loading Keras models safely, and reading what a Keras config says without loading it.

A .keras file is loaded with safe_mode=True: Lambda layers (Python bytecode stored in the file) are refused
unless the user trusts the file (trust_code). tf-keras HDF5 files have no safe mode, so their config is read
first and Lambda layers are refused the same way. Classes Keras cannot locate come from custom_objects:
"MODULE[:NAME]" imports MODULE and passes NAME, or every Layer/Model subclass MODULE defines.
"""
from __future__ import annotations

import importlib
import inspect
import json
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from hub.errors import UnsupportedModelError, UsageError
from hub.states import TensorSpec
from hub_tensorflow.detect import KERAS_CONFIG, h5_model_config

CODE_LAYERS = frozenset({"Lambda"})
NOT_LOCATED = ("Could not locate", "Unknown layer", "Unknown object", "Unknown class")


def model_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """custom_objects and trust_code as the core passes them to steps, backends and describe."""
    return dict(options or {})


def load_keras_model(path: Path, options: Mapping[str, Any] | None) -> Any:
    """A Keras 3 model from a .keras file, with safe_mode unless trust_code; clear errors for what it refuses."""
    import keras

    options = model_options(options)
    trusted = bool(options.get("trust_code"))
    custom = custom_objects(options, (keras.layers.Layer,))
    try:
        return keras.saving.load_model(str(path), custom_objects=custom, compile=False, safe_mode=not trusted)
    except Exception as error:
        raise _load_error(path, error, trusted) from error


def load_keras_h5_model(path: Path, options: Mapping[str, Any] | None) -> Any:
    """A tf-keras model from an HDF5 file; Lambda layers are refused unless trust_code (HDF5 has no safe mode)."""
    import tf_keras

    options = model_options(options)
    trusted = bool(options.get("trust_code"))
    config = h5_model_config(Path(path))
    if config is None:
        raise UnsupportedModelError(f"{Path(path).name} is not a Keras HDF5 model (no model_config attribute)")
    if not trusted:
        refuse_code_layers(path, config)
    custom = custom_objects(options, (tf_keras.layers.Layer,))
    try:
        return tf_keras.models.load_model(str(path), custom_objects=custom, compile=False)
    except Exception as error:
        raise _load_error(path, error, trusted) from error


def refuse_code_layers(path: Path, config: Any) -> None:
    found = sorted({layer.get("config", {}).get("name") or layer.get("class_name")
                    for layer in iter_layer_configs(config) if layer.get("class_name") in CODE_LAYERS})
    if found:
        raise UnsupportedModelError(
            f"{Path(path).name} has Lambda layers ({', '.join(found)}): loading them runs Python code stored in "
            "the file. If you trust its origin, pass --trust-code (option trust_code)")


def custom_objects(options: Mapping[str, Any], bases: tuple[type, ...]) -> dict[str, Any]:
    """Classes named by options["custom_objects"]: "MODULE:NAME", or "MODULE" for every subclass of `bases` it
    defines. Several may be given as a list or separated by commas."""
    given = options.get("custom_objects") or ()
    references = [given] if isinstance(given, str) else list(given)
    found: dict[str, Any] = {}
    for reference in (r.strip() for text in references for r in str(text).split(",") if r.strip()):
        module_name, _, name = reference.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise UsageError(f"--custom-objects {reference}: cannot import module {module_name!r} (is it on "
                             "PYTHONPATH?)", detail=str(error)) from error
        if name:
            if not hasattr(module, name):
                raise UsageError(f"--custom-objects {reference}: module {module_name} has no {name!r}")
            objects = {name: getattr(module, name)}
        else:
            objects = {n: c for n, c in vars(module).items() if inspect.isclass(c)
                       and c.__module__ == module.__name__ and issubclass(c, bases)}
            if not objects:
                raise UsageError(f"--custom-objects {reference}: module {module_name} defines no Keras layer or "
                                 "model class; name the object with MODULE:NAME")
        for object_name, value in objects.items():
            found[object_name] = value
            registered = _registered_name(value)
            if registered:
                found[registered] = value
    return found


def keras_archive_config(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(KERAS_CONFIG))


def iter_layer_configs(config: Any) -> Iterator[dict[str, Any]]:
    """Every object in a (nested) Keras config that has a class_name: layers, wrapped layers, sub-models."""
    if isinstance(config, dict):
        if "class_name" in config:
            yield config
        for value in config.values():
            yield from iter_layer_configs(value)
    elif isinstance(config, list):
        for value in config:
            yield from iter_layer_configs(value)


def config_input_specs(config: Mapping[str, Any]) -> tuple[TensorSpec, ...]:
    """Input specs from a Functional or Sequential config's InputLayers; empty when the config does not say
    (a subclassed model, a Sequential built without an Input)."""
    body = config.get("config", {})
    layers = body.get("layers") or []
    input_layers = {layer.get("config", {}).get("name"): layer for layer in layers
                    if layer.get("class_name") == "InputLayer"}
    if config.get("class_name") == "Sequential":
        first = layers[0] if layers else {}
        return (_input_spec(first),) if first.get("class_name") == "InputLayer" else ()
    names = body.get("input_layers")
    if not names:
        return ()
    if isinstance(names[0], str):  # a single input is stored as one [name, node, tensor] triple
        names = [names]
    specs = []
    for entry in names:
        layer = input_layers.get(entry[0])
        if layer is None:
            return ()
        specs.append(_input_spec(layer))
    return tuple(specs)


def _input_spec(layer: Mapping[str, Any]) -> TensorSpec:
    config = layer.get("config", {})
    shape = config.get("batch_shape") or config.get("batch_input_shape") or ()
    dtype = config.get("dtype") or "float32"
    if isinstance(dtype, dict):  # a DTypePolicy
        dtype = dtype.get("config", {}).get("name", "float32")
    return TensorSpec(config.get("name", "input"), tuple(shape), str(dtype))


def _registered_name(value: Any) -> str | None:
    try:
        import keras

        name = keras.saving.get_registered_name(value)
    except Exception:
        return None
    return name if isinstance(name, str) else None


def _load_error(path: Path, error: Exception, trusted: bool) -> Exception:
    text = str(error)
    name = Path(path).name
    if any(marker in text for marker in NOT_LOCATED):
        return UsageError(
            f"{name} uses a custom class that Keras cannot locate: pass --custom-objects MODULE[:NAME] "
            "(option custom_objects) naming the module that defines it", detail=text)
    if not trusted and ("safe_mode" in text or "Lambda" in text):
        return UnsupportedModelError(
            f"{name} has Lambda layers: loading them runs Python code stored in the file. If you trust its "
            "origin, pass --trust-code (option trust_code)", detail=text)
    return UnsupportedModelError(f"Keras cannot load {name}", detail=text)
