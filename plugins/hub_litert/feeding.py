"""How samples become a LiteRT interpreter's input tensors and its output tensors become arrays.

numpy only, no hub import: hub_litert_arm64 loads this same file into an emulated aarch64 Python, so a model run
on ARM is fed and read with exactly the arithmetic of the x86 backend and the outputs compare byte for byte.
Quantized inputs are fed by quantizing float samples with the tensor's own scale and zero point, and quantized
outputs are dequantized, so verification compares real values with the source's.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

Feed = dict[str, np.ndarray]
SIGNATURE_PREFIX = "serving_default_"
QUANTIZED_DTYPES = (np.int8, np.uint8, np.int16)


class InputMismatch(KeyError):
    """A sample's arrays cannot be matched to the model's inputs (the message says which are which)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def signature_names(interpreter: Any) -> dict[int, str]:
    """Tensor index -> the name its serving signature gives it ("image", "output_0"); empty without one."""
    signatures = interpreter._get_full_signature_list() or {}
    signature = signatures.get("serving_default") or (next(iter(signatures.values())) if len(signatures) == 1
                                                      else {})
    names = {}
    for group in ("inputs", "outputs"):
        names.update({index: name for name, index in (signature.get(group) or {}).items()})
    return names


def tensor_name(detail: dict, names: dict[int, str] | None = None) -> str:
    """The name a tensor is known by outside TFLite: its signature name, else the tensor name without the
    signature's decoration ("serving_default_image:0" -> "image")."""
    if names and detail["index"] in names:
        return names[detail["index"]]
    name = detail["name"].removeprefix(SIGNATURE_PREFIX)
    head, colon, index = name.rpartition(":")
    return head if colon and index.isdigit() else name


def quantize(array: np.ndarray, detail: dict) -> np.ndarray:
    """A float array as the tensor's type: quantized with its scale and zero point when it has them."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.type in QUANTIZED_DTYPES and scale and array.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(dtype)
    return array.astype(dtype, copy=False)


def dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).type in QUANTIZED_DTYPES and scale:
        return ((array.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return np.array(array)


def input_keys(inputs: list[dict], sample: Feed, names: dict[int, str]) -> list[str]:
    """Which key of the sample feeds each input: by name (signature, raw or undecorated), else by position.
    Raises InputMismatch when neither works."""
    keys = []
    for detail in inputs:
        for candidate in (tensor_name(detail, names), detail["name"], tensor_name(detail)):
            if candidate in sample:
                keys.append(candidate)
                break
    if len(keys) == len(inputs):
        return keys
    if len(sample) == len(inputs):
        return list(sample)
    raise InputMismatch(f"the sample has arrays {sorted(sample)} but the TFLite model's inputs are "
                        f"{[tensor_name(d, names) for d in inputs]}")


def bind(interpreter: Any, example: Feed) -> Callable[[Feed], list[np.ndarray]]:
    """A function running one sample on an interpreter with tensors allocated; input tensors are resized once
    to the example's shapes if they differ. Outputs are dequantized, in the model's output order."""
    names = signature_names(interpreter)
    inputs = interpreter.get_input_details()
    resized = False
    for detail, key in zip(inputs, input_keys(inputs, example, names)):
        shape = np.shape(example[key])
        if tuple(detail["shape"]) != tuple(shape):
            interpreter.resize_tensor_input(detail["index"], list(shape), strict=False)
            resized = True
    if resized:
        interpreter.allocate_tensors()
        inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()

    def infer(sample: Feed) -> list[np.ndarray]:
        for detail, key in zip(inputs, input_keys(inputs, sample, names)):
            interpreter.set_tensor(detail["index"], quantize(np.asarray(sample[key]), detail))
        interpreter.invoke()
        return [dequantize(interpreter.get_tensor(detail["index"]), detail) for detail in outputs]

    return infer
