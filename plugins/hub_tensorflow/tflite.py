"""Keras models and SavedModels -> TFLite with tf.lite.TFLiteConverter, one step per precision.

Keras 3 models go through from_keras_model (never from_concrete_functions: on Keras 3 it silently drops the
weights), SavedModels through from_saved_model. Full-integer int8 is calibrated on ctx.calibration, uses only
TFLITE_BUILTINS_INT8 kernels, and by default takes and returns int8; afterwards the model's operators are
checked, and one that still computes in float fails the step with the list of such operators.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from hub.declarations import StepContext, defaults_of
from hub.errors import StepFailedError, UsageError
from hub_tensorflow import INT8_OPTIONS
from hub_tensorflow.models import load_keras_model

IO_DTYPES = ("int8", "uint8", "float32")
CONVERTER_ERROR = re.compile(r"error: ([^\n]+)")
MAX_DIAGNOSTICS = 5


def convert_keras(ctx: StepContext) -> Path:
    """A Keras model -> TFLite at ctx.options["precision"] (fp32, fp16, int8-dynamic or int8)."""
    return _convert(ctx, _keras_converter, ctx.options["precision"])


def convert_savedmodel(ctx: StepContext) -> Path:
    """A SavedModel -> TFLite at ctx.options["precision"]."""
    return _convert(ctx, _savedmodel_converter, ctx.options["precision"])


def _keras_converter(ctx: StepContext) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(load_keras_model(ctx.input_path, ctx.options))


def _savedmodel_converter(ctx: StepContext) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(ctx.input_path), signature_keys=["serving_default"])


def _convert(ctx: StepContext, make_converter: Callable[[StepContext], Any], precision: str) -> Path:
    import tensorflow as tf

    converter = make_converter(ctx)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8-dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        options = {**defaults_of(INT8_OPTIONS), **ctx.options}
        io_dtype = str(options["io_dtype"])
        if io_dtype not in IO_DTYPES:
            raise UsageError(f"option io_dtype={io_dtype!r} is not one of: {', '.join(IO_DTYPES)}")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(ctx, options)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_dtype)
        converter.inference_output_type = getattr(tf, io_dtype)
        ctx.notes.update(io_dtype=io_dtype, supported_ops="TFLITE_BUILTINS_INT8")
    try:
        flatbuffer = converter.convert()
    except Exception as error:
        raise _conversion_error(error, precision) from error
    output = ctx.workdir / f"model.{precision}.tflite"
    output.write_bytes(flatbuffer)
    if precision == "int8" and {**defaults_of(INT8_OPTIONS), **ctx.options}["full_integer"]:
        check_full_integer(output)
    ctx.notes["precision"] = precision
    return output


def representative_dataset(ctx: StepContext, options: dict[str, Any]) -> Callable[[], Iterator[Any]]:
    """Calibration samples one at a time, as a batch of one: ctx.calibration's arrays (samples on axis 0, in the
    model's own layout), else seeded random inputs of the declared shapes (noted as a warning)."""
    names = [spec.name for spec in ctx.inputs]
    feeds = ctx.calibration_feeds(int(options["max_calibration_samples"]))
    if feeds:
        ctx.notes["calibration_source"] = Path(ctx.calibration).name
    else:
        rng = np.random.default_rng(int(options["seed"]))
        feeds = [{spec.name: rng.standard_normal((1, *(d or 1 for d in spec.shape[1:]))) for spec in ctx.inputs}
                 for _ in range(int(options["random_calibration_samples"]))]
        ctx.notes["calibration_source"] = "random"
        ctx.notes["warning"] = "no calibration data: int8 ranges come from random inputs; pass real samples"
    ctx.notes["calibration_samples"] = len(feeds)

    def samples() -> Iterator[Any]:
        for feed in feeds:
            batch = {name: feed[name].astype(np.float32) for name in names}
            # one input: a list (its name may differ in the converted signature); several: keyed by name
            yield [batch[names[0]]] if len(names) == 1 else batch

    return samples


def check_full_integer(path: Path) -> None:
    """Fail when any operator of the model still computes in float, naming those operators."""
    from hub_litert.interpreter import float_operators

    stayed_float = float_operators(path)
    if stayed_float:
        raise StepFailedError(
            f"the model cannot be made fully integer: {len(stayed_float)} operator(s) stayed float: "
            + "; ".join(stayed_float))


def _conversion_error(error: Exception, precision: str) -> StepFailedError:
    """The converter's MLIR diagnostics ("loc(...): error: 'tfl.sin' op ...") in the message, the rest as detail.
    (TF 2.21 mostly leaves an op it cannot quantize in float without an error: check_full_integer catches it.)"""
    text = str(error)
    diagnostics = list(dict.fromkeys(m.group(1).strip() for m in CONVERTER_ERROR.finditer(text)))
    listed = ": " + "; ".join(diagnostics[:MAX_DIAGNOSTICS]) if diagnostics else ""
    return StepFailedError(f"TFLiteConverter failed ({precision}){listed}", detail=text)
