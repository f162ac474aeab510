"""Behaviour of the linear-model plugin."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from hub.declarations import StepContext
from hub.states import ModelInfo, TensorSpec

MARKER = "hub_linear.npy"


def is_linear_npz(path: Path) -> bool:
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return MARKER in archive.namelist()


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return data["weight"].astype(np.float32), data["bias"].astype(np.float32)


def describe(path: Path, options: dict) -> ModelInfo:
    weight, bias = _load(path)
    return ModelInfo(format="linear-npz", inputs=(TensorSpec("x", (None, weight.shape[1])),),
                     outputs=(TensorSpec("y", (None, weight.shape[0])),), parameters=weight.size + bias.size)


def to_onnx(ctx: StepContext) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight, bias = _load(ctx.input_path)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "weight", "bias"], ["y"], transB=1)], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, weight.shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, weight.shape[0]])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    output = ctx.workdir / "linear.onnx"
    onnx.save(model, output)
    ctx.notes["gemm"] = list(weight.shape)
    return output


def round_weights(ctx: StepContext) -> Path:
    weight, bias = _load(ctx.input_path)
    decimals = int(ctx.options["decimals"])
    output = ctx.workdir / "rounded.npz"
    np.savez(output, weight=np.round(weight, decimals), bias=bias, hub_linear=np.array(1))
    ctx.notes["decimals"] = decimals
    return output


def run(model_path: Path, samples: list[dict[str, np.ndarray]], threads: int) -> list[list[np.ndarray]]:
    weight, bias = _load(model_path)
    return [[sample["x"].astype(np.float32) @ weight.T + bias] for sample in samples]
