"""TensorFlow and Keras: the formats keras (.keras), keras-h5 (tf-keras HDF5) and savedmodel (a folder); the
converters to SavedModel, to TFLite (one step per precision, TFLiteConverter) and to ONNX (tf2onnx); and a
"tensorflow" backend that runs Keras models and SavedModels to verify against them.

Declarations only: detection is in hub_tensorflow.detect (zipfile and h5py, never tensorflow); loading is in
.models, the steps in .savedmodel, .tflite and .onnx_export, the backend in .backend, all imported by the worker
that needs them. TF and Keras models are channels-last already: nothing here changes the layout.

Options read by the steps and the backend (the user's flags, passed as step options):
  custom_objects: "MODULE[:NAME]" (or a list): classes a .keras/.h5 file names that Keras cannot locate.
  trust_code: load Lambda layers, which run Python stored in the file.
"""
from __future__ import annotations

from hub.declarations import Backend, Format, Option, Request, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

TENSORFLOW = "tensorflow>=2.16"
KERAS = "keras>=3.0"
TF_KERAS = "tf-keras>=2.16"
TF2ONNX = "tf2onnx>=1.16"
ONNX = "onnx>=1.16"
H5PY = "h5py>=3.0"
LITERT = "ai-edge-litert>=1.2"  # hub_litert.rewrite reads and writes flatbuffers with it
EXTRA = "tf"
ONNX_OPSET = 17

# What each TFLite precision costs and gives. Seconds are dominated by importing TensorFlow in a fresh worker
# (about 3 s); sizes are the float32 file's fraction, as measured on small CNNs.
TFLITE_PRECISIONS = {
    "fp32": {"suffix": "", "seconds": 6.0, "fidelity_loss": 0.0, "size_ratio": 1.0,
             "about": "float32"},
    "fp16": {"suffix": "-fp16", "seconds": 6.0, "fidelity_loss": 0.0005, "size_ratio": 0.5,
             "about": "float16 weights, dequantized to float32 at load (Optimize.DEFAULT + float16)"},
    "int8-dynamic": {"suffix": "-dynamic-int8", "seconds": 6.0, "fidelity_loss": 0.01, "size_ratio": 0.27,
                     "about": "dynamic-range int8: int8 weights, activations quantized at run time"},
    "int8": {"suffix": "-int8", "seconds": 12.0, "fidelity_loss": 0.01, "size_ratio": 0.27,
             "about": "full-integer int8: int8 weights and activations calibrated on the samples, int8 input "
                      "and output, TFLITE_BUILTINS_INT8 ops only"},
}
# Full integer by default: a model that keeps a float op fails with the list of such ops. io_dtype int8 feeds
# and returns int8 (scale and zero point in the model); "float32" keeps float I/O with QUANTIZE/DEQUANTIZE.
INT8_OPTIONS = (
    Option("io_dtype", str, "int8", "the type of the model's inputs and outputs: int8, uint8 or float32"),
    Option("full_integer", bool, True, "fail a model that keeps a float operator, naming those operators"),
    Option("max_calibration_samples", int, 200, "at most this many calibration samples are used"),
    Option("random_calibration_samples", int, 16, "seeded random samples used when there is no calibration"),
    Option("seed", int, 0, "seed of those random samples"),
)
PRECISION_REQUESTS = {
    "int8": Request("int8", "precision", "int8", description="static int8 (weights and activations, calibrated)"),
    "fp16": Request("fp16", "precision", "fp16", description="float16 weights and activations"),
}
OPSET = (Option("opset", int, ONNX_OPSET, "the ONNX opset to convert to"),)


def _tflite_steps(source: str, accepts: Requirement, seconds_offset: float) -> list[Step]:
    steps = []
    for precision, terms in TFLITE_PRECISIONS.items():
        steps.append(Step(
            name=f"{source}-to-tflite{terms['suffix']}",
            accepts=accepts,
            produces={"format": "tflite", "precision": precision, "graph": "raw"},
            run=f"hub_tensorflow.tflite:convert_{source}",
            description=f"{source} -> TFLite with tf.lite.TFLiteConverter: {terms['about']}",
            seconds=terms["seconds"] + seconds_offset, seconds_per_mb=0.1,
            fidelity_loss=terms["fidelity_loss"], size_ratio=terms["size_ratio"],
            needs_calibration=precision == "int8",
            options=(Option("precision", str, precision, "set by the step: the precision it converts to"),
                     *(INT8_OPTIONS if precision == "int8" else ())),
            satisfies=tuple(PRECISION_REQUESTS[p] for p in (precision,) if p in PRECISION_REQUESTS),
            requires=(TENSORFLOW,), extra=EXTRA,
        ))
    return steps


@hookimpl
def hub_formats() -> list[Format]:
    return [
        Format(
            name="keras",
            detect="hub_tensorflow.detect:is_keras_archive",
            describe="hub_tensorflow.describe:describe_keras",
            extensions=(".keras",),
            description="Keras 3 archive (zip: config.json, model.weights.h5); loaded with safe_mode",
            requires=(TENSORFLOW, KERAS, H5PY),
            extra=EXTRA,
        ),
        Format(
            name="keras-h5",
            detect="hub_tensorflow.detect:is_keras_h5",
            describe="hub_tensorflow.describe:describe_keras_h5",
            extensions=(".h5", ".hdf5"),
            description="legacy Keras 2 HDF5 model (model_config attribute), loaded with tf-keras",
            requires=(TENSORFLOW, TF_KERAS, H5PY),
            extra=EXTRA,
        ),
        Format(
            name="savedmodel",
            detect="hub_tensorflow.detect:is_savedmodel",
            describe="hub_tensorflow.describe:describe_savedmodel",
            description="TensorFlow SavedModel folder (saved_model.pb, variables/); its serving_default "
                        "signature is the model",
            requires=(TENSORFLOW,),
            extra=EXTRA,
        ),
    ]


@hookimpl
def hub_converters() -> list[Step]:
    fp32 = "fp32"
    keras = Requirement.of(format="keras", precision=fp32)
    savedmodel = Requirement.of(format="savedmodel", precision=fp32)
    return [
        Step(
            name="keras-export-savedmodel",
            accepts=keras,
            produces={"format": "savedmodel", "graph": "raw"},
            run="hub_tensorflow.savedmodel:export_keras",
            description="Keras 3 model -> SavedModel with model.export (serving_default signature)",
            seconds=6.0, seconds_per_mb=0.05,
            requires=(TENSORFLOW, KERAS), extra=EXTRA,
        ),
        Step(
            name="tf-keras-h5-to-savedmodel",
            accepts=Requirement.of(format="keras-h5", precision=fp32),
            produces={"format": "savedmodel", "graph": "raw"},
            run="hub_tensorflow.savedmodel:export_keras_h5",
            description="tf-keras HDF5 model -> SavedModel with tf.saved_model.save",
            seconds=7.0, seconds_per_mb=0.05,
            requires=(TENSORFLOW, TF_KERAS), extra=EXTRA,
        ),
        # keras -> tflite directly is one worker instead of two; the SavedModel route is its fallback.
        *_tflite_steps("keras", keras, seconds_offset=0.0),
        *_tflite_steps("savedmodel", savedmodel, seconds_offset=-1.0),
        Step(
            name="keras-tf2onnx",
            accepts=keras,
            produces={"format": "onnx", "graph": "raw"},
            run="hub_tensorflow.onnx_export:keras_to_onnx",
            description=f"Keras 3 model -> ONNX with tf2onnx.convert.from_keras (opset {ONNX_OPSET})",
            seconds=8.0, seconds_per_mb=0.1, options=OPSET,
            requires=(TENSORFLOW, KERAS, TF2ONNX, ONNX), extra=EXTRA,
        ),
        Step(
            name="savedmodel-tf2onnx",
            accepts=savedmodel,
            produces={"format": "onnx", "graph": "raw"},
            run="hub_tensorflow.onnx_export:savedmodel_to_onnx",
            description=f"SavedModel -> ONNX with tf2onnx (serving_default, opset {ONNX_OPSET})",
            seconds=10.0, seconds_per_mb=0.1, options=OPSET,
            requires=(TENSORFLOW, TF2ONNX, ONNX), extra=EXTRA,
        ),
        Step(
            name="tflite-tf2onnx",
            # A TFLite with float16 weights computes in float32 (DEQUANTIZE ops widen its weights): tf2onnx folds
            # the widening into float32 initializers, losslessly, so the ONNX model is plain fp32.
            accepts=Requirement.of(format="tflite", precision=(fp32, "fp16")),
            produces={"format": "onnx", "graph": "raw", "precision": fp32},
            run="hub_tensorflow.onnx_export:tflite_to_onnx",
            description=f"float32 TFLite (or float16 weights, widened) -> ONNX with tf2onnx.convert.from_tflite "
                        f"(opset {ONNX_OPSET})",
            seconds=8.0, seconds_per_mb=0.1, options=OPSET,
            requires=(TENSORFLOW, TF2ONNX, ONNX, LITERT), extra=EXTRA,
        ),
    ]


@hookimpl
def hub_backends() -> list[Backend]:
    return [
        Backend(
            name="tensorflow",
            formats=frozenset({"keras", "keras-h5", "savedmodel"}),
            run="hub_tensorflow.backend:run_samples",
            latency="hub_tensorflow.backend:median_latency_ms",
            output_names="hub_tensorflow.backend:output_names",
            description="TensorFlow on the CPU: Keras models called directly, SavedModels through serving_default",
            requires=(TENSORFLOW,),
            extra=EXTRA,
        )
    ]
