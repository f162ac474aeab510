"""Small ONNX models, one per operator the MindIR translators cover (issue 5's list), with seeded weights.
Each builder returns (onnx.ModelProto, feeds)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
RNG_SEED = 0


def _model(nodes: list, inputs: dict[str, tuple], outputs: dict[str, tuple | None],
           weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "op_test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        initializer=[numpy_helper.from_array(np.asarray(v), n) for n, v in (weights or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    inferred = {v.name: v.type for v in onnx.shape_inference.infer_shapes(model).graph.output}
    for output in model.graph.output:
        output.type.CopyFrom(inferred[output.name])
    onnx.checker.check_model(model)
    return model


def _rand(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _unary(op: str, **attrs) -> Callable[[], tuple]:
    def build() -> tuple:
        node = helper.make_node(op, ["x"], ["y"], **attrs)
        return _model([node], {"x": (1, 4, 6, 6)}, {"y": None}), {"x": _rand(1, 4, 6, 6) * 3}
    return build


def _binary(op: str) -> Callable[[], tuple]:
    def build() -> tuple:
        nodes = [helper.make_node(op, ["x", "y"], ["t"]), helper.make_node(op, ["t", "c"], ["z"])]
        weights = {"c": np.asarray(1.5 if op != "Sub" else 0.25, dtype=np.float32)}
        return _model(nodes, {"x": (1, 4, 6, 6), "y": (1, 4, 6, 6)}, {"z": None}, weights), {
            "x": _rand(1, 4, 6, 6), "y": np.abs(_rand(1, 4, 6, 6, seed=2)) + 0.5}
    return build


def prelu_and_leaky_relu() -> tuple:
    """PRelu with a per-channel slope shaped (C, 1, 1), as torch exports nn.PReLU, then LeakyRelu."""
    nodes = [helper.make_node("PRelu", ["x", "slope"], ["t"]), helper.make_node("LeakyRelu", ["t"], ["y"], alpha=0.2)]
    weights = {"slope": np.linspace(-0.5, 0.5, 4, dtype=np.float32).reshape(4, 1, 1)}
    return _model(nodes, {"x": (1, 4, 6, 6)}, {"y": None}, weights), {"x": _rand(1, 4, 6, 6) * 3}


def conv_asymmetric() -> tuple:
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[0, 0, 1, 1], strides=[2, 2])
    return _model([node], {"x": (1, 3, 9, 9)}, {"y": None}, {"w": _rand(8, 3, 3, 3), "b": _rand(8)}), {
        "x": _rand(1, 3, 9, 9)}


def conv_grouped_and_depthwise() -> tuple:
    nodes = [helper.make_node("Conv", ["x", "w1"], ["t"], pads=[1, 1, 1, 1], group=2, dilations=[1, 1]),
             helper.make_node("Conv", ["t", "w2", "b2"], ["y"], pads=[2, 2, 2, 2], group=8, dilations=[2, 2])]
    weights = {"w1": _rand(8, 2, 3, 3), "w2": _rand(8, 1, 3, 3), "b2": _rand(8)}
    return _model(nodes, {"x": (1, 4, 8, 8)}, {"y": None}, weights), {"x": _rand(1, 4, 8, 8)}


def conv_same_upper() -> tuple:
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])
    return _model([node], {"x": (1, 3, 8, 8)}, {"y": None}, {"w": _rand(4, 3, 3, 3)}), {"x": _rand(1, 3, 8, 8)}


def conv_transpose() -> tuple:
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                            output_padding=[1, 1])
    return _model([node], {"x": (1, 4, 5, 5)}, {"y": None}, {"w": _rand(4, 6, 3, 3), "b": _rand(6)}), {
        "x": _rand(1, 4, 5, 5)}


def batch_norm() -> tuple:
    weights = {"scale": _rand(4) + 1, "bias": _rand(4, seed=3), "mean": _rand(4, seed=4),
               "var": np.abs(_rand(4, seed=5)) + 0.5}
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], epsilon=1e-3)
    return _model([node], {"x": (1, 4, 6, 6)}, {"y": None}, weights), {"x": _rand(1, 4, 6, 6)}


def clip_relu6_and_range() -> tuple:
    nodes = [helper.make_node("Clip", ["x", "zero", "six"], ["t"]),
             helper.make_node("Clip", ["t", "low", "high"], ["y"])]
    weights = {"zero": np.float32(0), "six": np.float32(6), "low": np.float32(0.5), "high": np.float32(4)}
    return _model(nodes, {"x": (1, 4, 6, 6)}, {"y": None}, weights), {"x": _rand(1, 4, 6, 6) * 5}


def gelu_erf() -> tuple:
    """GELU as exporters write it: x * 0.5 * (1 + erf(x / sqrt 2))."""
    nodes = [helper.make_node("Div", ["x", "root2"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
             helper.make_node("Add", ["b", "one"], ["c"]), helper.make_node("Mul", ["x", "c"], ["d"]),
             helper.make_node("Mul", ["d", "half"], ["y"])]
    weights = {"root2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)}
    return _model(nodes, {"x": (2, 16)}, {"y": None}, weights), {"x": _rand(2, 16) * 2}


def pools() -> tuple:
    nodes = [helper.make_node("MaxPool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
             helper.make_node("AveragePool", ["a"], ["b"], kernel_shape=[2, 2], strides=[1, 1]),
             helper.make_node("AveragePool", ["b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              count_include_pad=1),
             helper.make_node("GlobalAveragePool", ["c"], ["y"])]
    return _model(nodes, {"x": (1, 4, 9, 9)}, {"y": None}), {"x": _rand(1, 4, 9, 9)}


def matmul_gemm() -> tuple:
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["c"], transB=1, alpha=0.5),
             helper.make_node("Softmax", ["c"], ["y"], axis=-1)]
    weights = {"w1": _rand(8, 16), "w2": _rand(10, 16), "b2": _rand(10)}
    return _model(nodes, {"x": (2, 8)}, {"y": None}, weights), {"x": _rand(2, 8)}


def batched_matmul_layer_norm() -> tuple:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]),
             helper.make_node("LayerNormalization", ["a", "g", "b"], ["n"], axis=-1, epsilon=1e-5),
             helper.make_node("ReduceMean", ["n"], ["y"], axes=[1], keepdims=0)]
    weights = {"w": _rand(16, 12), "g": _rand(12) + 1, "b": _rand(12, seed=7)}
    return _model(nodes, {"x": (1, 5, 16)}, {"y": None}, weights), {"x": _rand(1, 5, 16)}


def shapes() -> tuple:
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["a", "shape"], ["b"]),
             helper.make_node("Unsqueeze", ["b", "axes"], ["c"]),
             helper.make_node("Squeeze", ["c", "axes"], ["d"]),
             helper.make_node("Flatten", ["d"], ["y"], axis=1)]
    weights = {"shape": np.asarray([1, -1, 4], dtype=np.int64), "axes": np.asarray([1], dtype=np.int64)}
    return _model(nodes, {"x": (1, 4, 3, 5)}, {"y": None}, weights), {"x": _rand(1, 4, 3, 5)}


def concat_split_slice() -> tuple:
    nodes = [helper.make_node("Concat", ["x", "z"], ["a"], axis=1),
             helper.make_node("Split", ["a", "sizes"], ["p", "q"], axis=1),
             helper.make_node("Slice", ["q", "starts", "ends", "axes", "steps"], ["r"]),
             helper.make_node("Add", ["p", "r"], ["y"])]
    weights = {"sizes": np.asarray([3, 5], dtype=np.int64), "starts": np.asarray([1, 0], dtype=np.int64),
               "ends": np.asarray([4, 99], dtype=np.int64), "axes": np.asarray([1, 3], dtype=np.int64),
               "steps": np.asarray([1, 1], dtype=np.int64)}
    return _model(nodes, {"x": (1, 3, 4, 4), "z": (1, 5, 4, 4)}, {"y": None}, weights), {
        "x": _rand(1, 3, 4, 4), "z": _rand(1, 5, 4, 4, seed=9)}


def pad_and_resize() -> tuple:
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["a"], mode="constant"),
             helper.make_node("Pad", ["a", "pads2"], ["b"], mode="reflect"),
             helper.make_node("Resize", ["b", "", "scales"], ["c"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="linear",
                              coordinate_transformation_mode="half_pixel")]
    weights = {"pads": np.asarray([0, 0, 1, 0, 0, 0, 2, 1], dtype=np.int64), "value": np.float32(0.5),
               "pads2": np.asarray([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64),
               "scales": np.asarray([1, 1, 2, 2], dtype=np.float32)}
    return _model(nodes, {"x": (1, 2, 4, 5)}, {"y": None}, weights), {"x": _rand(1, 2, 4, 5)}


def two_outputs() -> tuple:
    nodes = [helper.make_node("Sigmoid", ["x"], ["y"]), helper.make_node("Tanh", ["x"], ["z"])]
    return _model(nodes, {"x": (1, 8)}, {"y": None, "z": None}), {"x": _rand(1, 8)}


OP_MODELS: dict[str, Callable[[], tuple]] = {
    "conv_asymmetric": conv_asymmetric, "conv_grouped_and_depthwise": conv_grouped_and_depthwise,
    "conv_same_upper": conv_same_upper, "conv_transpose": conv_transpose, "batch_norm": batch_norm,
    "relu": _unary("Relu"), "clip": clip_relu6_and_range, "sigmoid": _unary("Sigmoid"),
    "hard_sigmoid": _unary("HardSigmoid", alpha=1 / 6, beta=0.5),
    "hard_sigmoid_custom": _unary("HardSigmoid", alpha=0.2, beta=0.4), "hard_swish": _unary("HardSwish"),
    "tanh": _unary("Tanh"), "erf": _unary("Erf"), "gelu_erf": gelu_erf, "pools": pools,
    "add": _binary("Add"), "sub": _binary("Sub"), "mul": _binary("Mul"), "div": _binary("Div"),
    "matmul_gemm_softmax": matmul_gemm, "batched_matmul_layer_norm_reduce_mean": batched_matmul_layer_norm,
    "shapes": shapes, "concat_split_slice": concat_split_slice, "pad_and_resize": pad_and_resize,
    "two_outputs": two_outputs, "prelu_and_leaky_relu": prelu_and_leaky_relu,
}
