"""Describing, running and timing .tflite models with the LiteRT interpreter.

The interpreter comes from ai-edge-litert, else tflite-runtime, else TensorFlow (tf.lite.Interpreter): the first
that imports. Samples are fed and outputs read by hub_litert.feeding (quantized inputs quantized with the tensor's
own scale and zero point, quantized outputs dequantized), which the ARM emulation backend shares.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from hub import kit
from hub.errors import MissingDependencyError, UnsupportedModelError, UsageError
from hub.states import ModelInfo, TensorSpec
from hub_litert.feeding import QUANTIZED_DTYPES, Feed, InputMismatch, bind, signature_names, tensor_name

FLOAT_DTYPES = (np.float32, np.float16, np.float64)


def runtime() -> tuple[Any, str]:
    """The interpreter module of the first installed runtime (with Interpreter and OpResolverType), and its name."""
    failures = []
    for module_name, label in (("ai_edge_litert.interpreter", "ai-edge-litert"),
                               ("tflite_runtime.interpreter", "tflite-runtime")):
        try:
            return importlib.import_module(module_name), label
        except Exception as error:  # tflite-runtime 2.14 fails with numpy 2 at import, not only when missing
            failures.append(f"{label}: {error}")
    try:
        import tensorflow as tf

        return SimpleNamespace(Interpreter=tf.lite.Interpreter,
                               OpResolverType=tf.lite.experimental.OpResolverType), "tensorflow"
    except Exception as error:
        failures.append(f"tensorflow: {error}")
    raise MissingDependencyError("no TFLite interpreter is installed: pip install 'conversion-hub[tflite]'",
                                 detail="\n".join(failures))


def open_interpreter(model_path: Path, threads: int = 1, delegates: bool = True,
                     preserve_all_tensors: bool = False) -> Any:
    """An interpreter with tensors allocated. Without delegates, the operator list is the model's own (XNNPACK
    otherwise replaces what it takes by DELEGATE nodes); a model whose custom operators only the default
    delegates resolve (MediaPipe's Convolution2DTransposeBias) is opened with them all the same. With
    preserve_all_tensors, every intermediate tensor can be read after invoke()."""
    module, _ = runtime()
    settings: dict[str, Any] = {"model_path": str(model_path), "num_threads": max(1, int(threads)),
                                "experimental_preserve_all_tensors": preserve_all_tensors}
    if not delegates:
        settings["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = module.Interpreter(**settings)
        interpreter.allocate_tensors()
    except Exception as error:
        if not delegates and "custom op" in str(error):
            return open_interpreter(model_path, threads, True, preserve_all_tensors)
        raise UnsupportedModelError(f"the TFLite interpreter cannot load {Path(model_path).name}",
                                    detail=str(error)) from error
    return interpreter


def tensor_spec(detail: dict, names: dict[int, str] | None = None) -> TensorSpec:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape = tuple(None if int(d) < 0 else int(d) for d in dims)
    # A quantized input or output is fed and read as real values (see quantize/dequantize): float32 to callers.
    dtype = np.dtype(detail["dtype"])
    real = dtype.type in QUANTIZED_DTYPES and detail["quantization"][0]
    return TensorSpec(tensor_name(detail, names), shape, "float32" if real else dtype.name)


def describe_tflite(path: Path, options: dict[str, Any] | None = None) -> ModelInfo:
    """Inputs and outputs (names without the signature's decoration), weights, ops, and I/O quantization."""
    interpreter = open_interpreter(path, delegates=False)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    names = signature_names(interpreter)
    constants = _constant_tensors(interpreter)
    notes = [f"runtime {runtime()[1]}"]
    for detail in inputs + outputs:
        scale, zero_point = detail["quantization"]
        if scale:
            notes.append(f"{tensor_name(detail, names)}: {np.dtype(detail['dtype']).name}, scale {scale:.6g}, "
                         f"zero point {zero_point}")
    op_names = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    notes.append("operators: " + ", ".join(op_names))
    return ModelInfo(
        format="tflite",
        inputs=tuple(tensor_spec(d, names) for d in inputs),
        outputs=tuple(tensor_spec(d, names) for d in outputs),
        parameters=int(sum(int(np.prod(d["shape"])) for d in constants)),
        notes=tuple(notes),
    )


def float_operators(path: Path) -> list[str]:
    """Operators that still compute in floating point ("CONV_2D (conv2d_1)"): any float input or output tensor
    other than constants, excluding the QUANTIZE/DEQUANTIZE ops at the edges that convert float I/O."""
    interpreter = open_interpreter(path, delegates=False)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    constant_indexes = {d["index"] for d in _constant_tensors(interpreter)}
    found = []
    for op in interpreter._get_ops_details():
        tensors = [details[i] for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0 and i in details]
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if any(np.dtype(t["dtype"]).type in FLOAT_DTYPES for t in tensors if t["index"] not in constant_indexes):
            outputs = [details[i]["name"] for i in op["outputs"] if i in details]
            found.append(f"{op['op_name']} ({', '.join(outputs)})" if outputs else op["op_name"])
    return found


def io_dtypes(path: Path) -> tuple[list[str], list[str]]:
    """numpy names of the input and output tensors' types."""
    interpreter = open_interpreter(path, delegates=False)
    return ([np.dtype(d["dtype"]).name for d in interpreter.get_input_details()],
            [np.dtype(d["dtype"]).name for d in interpreter.get_output_details()])


def run_samples(model_path: Path, samples: list[Feed], threads: int) -> list[list[np.ndarray]]:
    """The outputs (dequantized) of each batch-1 feed, in the model's output order."""
    infer = inference(Path(model_path), threads, samples[0] if samples else {})
    return [infer(sample) for sample in samples]


def output_names(model_path: Path) -> list[str]:
    """The outputs' names (their serving signature's where it has one), in the order run_samples returns them."""
    interpreter = open_interpreter(Path(model_path), delegates=False)
    names = signature_names(interpreter)
    return [tensor_name(detail, names) for detail in interpreter.get_output_details()]


def median_latency_ms(model_path: Path, sample: Feed, threads: int, repeats: int) -> float:
    """Median milliseconds of one invoke (feeding included), after warm-up runs that are not counted."""
    infer = inference(Path(model_path), threads, sample)
    return kit.median_latency_ms(lambda: infer(sample), repeats)


def inference(model_path: Path, threads: int, example: Feed) -> Callable[[Feed], list[np.ndarray]]:
    """A function running one sample; input tensors are resized once to the example's shapes if they differ."""
    infer = _input_mismatch_as_usage_error(bind, open_interpreter(model_path, threads), example)
    return lambda sample: _input_mismatch_as_usage_error(infer, sample)


def _input_mismatch_as_usage_error(function: Callable[..., Any], *args: Any) -> Any:
    try:
        return function(*args)
    except InputMismatch as error:
        raise UsageError(str(error)) from None


def _constant_tensors(interpreter: Any) -> list[dict]:
    """Tensors whose values are stored in the model (weights, biases, constant shapes): read by some operator,
    written by none, and not a model input."""
    operators = interpreter._get_ops_details()
    produced = {i for op in operators for i in op["outputs"]}
    consumed = {i for op in operators for i in op["inputs"] if i >= 0}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    indexes = consumed - produced - inputs
    return [d for d in interpreter.get_tensor_details() if d["index"] in indexes]
