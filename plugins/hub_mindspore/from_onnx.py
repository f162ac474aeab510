"""ONNX -> MindIR, in pure Python: each ONNX node becomes the MindSpore primitives MindSpore itself writes for
the same layer (Conv -> Conv2D + BiasAdd, Gemm -> MatMul + BiasAdd, BatchNormalization -> BatchNorm +
TupleGetItem...), so `mindspore.load` + `nn.GraphCell` run the result.

The ONNX graph is shape-inferred first, and nodes whose inputs are all constants (shape arithmetic from
exporters) are folded with ONNX's reference evaluator, so handlers see settings as numpy constants. Weights
become graph parameters; settings become Constant nodes or primitive attributes, as MindSpore places them.
Every ONNX operator without a handler is listed before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hub.errors import UnsupportedModelError
from hub_mindspore import wire
from hub_mindspore.handlers import registrar
from hub_mindspore.values import DATA_TYPES, array_to_tensor, encode

GRAPH_NAME = "main_graph"
PRODUCER, PRODUCER_VERSION, IR_VERSION = "MindSpore", "2.10.0", "1.1"  # mindspore.load checks these are set
NCHW = 0  # MindSpore's data_format argument
PAD_MODE_SAME, PAD_MODE_VALID = 1, 2  # AvgPool's pad_mode argument
ONNX_TO_MINDSPORE_TYPE_IDS = {9: 30, 3: 32, 5: 33, 6: 34, 7: 35, 2: 37, 4: 38, 12: 39, 13: 40, 10: 42, 1: 43, 11: 44}
FOLDABLE_LIMIT = 1 << 20  # elements: bigger constant results stay in the graph


@dataclass
class MindIRBuilder:
    """Collects MindIR nodes, primitives, constants and parameters."""

    model: Any = field(default_factory=wire.ModelProto)
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # ONNX name -> value known at conversion
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)  # ONNX name -> ONNX element type
    names: dict[str, str] = field(default_factory=dict)  # ONNX name -> MindIR value name
    _primitives: dict[tuple, str] = field(default_factory=dict)
    _count: int = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{GRAPH_NAME}:{hint}_{self._count}"

    def primitive(self, op_type: str, attributes: dict[str, Any] | None = None, function: bool = True) -> str:
        key = (op_type, repr(sorted((attributes or {}).items())), function)
        if key not in self._primitives:
            name = f"{op_type}:{len(self._primitives) + 1}"
            primitive = self.model.primitives.add(name=name, op_type=op_type)
            primitive.prim_type = wire.PrimType.PRIMITIVE_FUNCTION if function else wire.PrimType.PRIMITIVE
            for attribute_name, value in (attributes or {}).items():
                encode(value, primitive.attribute.add(name=attribute_name))
            self._primitives[key] = name
        return self._primitives[key]

    def constant(self, value: Any) -> str:
        """A Constant node holding a Python scalar, tuple, None, MONAD or numpy array (TENSORS)."""
        name = self.fresh("const")
        node = self.model.graph.node.add(op_type="Constant", name=name, output=[name])
        encode(value, node.attribute.add(name="value"))
        return name

    def parameter(self, onnx_name: str, array: np.ndarray) -> str:
        name = f"{GRAPH_NAME}:{onnx_name}"
        parameter = self.model.graph.parameter.add(name=name, ref_key=onnx_name)
        array_to_tensor(array, parameter)
        self.names[onnx_name] = name
        return name

    def value(self, onnx_name: str) -> str:
        """The MindIR value for an ONNX tensor name: a computed value, or a constant made a parameter/tensor."""
        if onnx_name in self.names:
            return self.names[onnx_name]
        if onnx_name in self.constants:
            array = self.constants[onnx_name]
            name = self.parameter(onnx_name, array) if array.size > 1 else self.constant(array)
            self.names[onnx_name] = name
            return name
        raise UnsupportedModelError(f"the ONNX graph uses {onnx_name!r} before it is computed")

    def arg(self, value: Any) -> str:
        """A node input: a Ref (to an ONNX or a MindIR tensor), or a Python constant, which becomes a Constant node."""
        if isinstance(value, Ref):
            return self.value(value.name) if not value.mindir else value.name
        return self.constant(value)

    def call(self, op_type: str, args: list[Any], attributes: dict[str, Any] | None = None,
             function: bool = True, shape: tuple[int, ...] | None = None) -> "Ref":
        inputs = [self.arg(a) for a in args]  # constants first: MindSpore reads nodes in order
        name = self.fresh(op_type)
        node = self.model.graph.node.add(op_type=f"REF::{self.primitive(op_type, attributes, function)}",
                                         name=name, output=[name])
        node.input.extend(inputs)
        if shape is not None:
            shape_attribute = node.attribute.add(name="shape", type=wire.AttributeType.TENSORS)
            shape_attribute.tensors.add(data_type=wire.DataType.FLOAT).dims.extend(shape)
        return Ref(name, mindir=True)

    def item(self, value: "Ref", index: int) -> "Ref":
        return self.call("TupleGetItem", [value, index], function=False)

    def const_of(self, onnx_name: str) -> np.ndarray:
        if onnx_name not in self.constants:
            raise UnsupportedModelError(f"{onnx_name!r} must be a constant to convert to MindIR (it is computed "
                                        "at run time)")
        return self.constants[onnx_name]


@dataclass(frozen=True)
class Ref:
    """A tensor: an ONNX name (mindir=False) or a MindIR value name (mindir=True)."""

    name: str
    mindir: bool = False


Handler = Callable[[MindIRBuilder, Any, dict[str, Any]], Any]
OPS: dict[str, Handler] = {}


handles = registrar(OPS)


def _in(node: Any, index: int) -> Ref | None:
    return Ref(node.input[index]) if len(node.input) > index and node.input[index] else None


def _shape(b: MindIRBuilder, node: Any, index: int = 0) -> tuple[int, ...]:
    name = node.input[index]
    if name not in b.shapes:
        raise UnsupportedModelError(f"the shape of {name!r} (input of {node.op_type}) is not static; give the "
                                    "model fixed input shapes")
    return b.shapes[name]


def _out_shape(b: MindIRBuilder, node: Any, index: int = 0) -> tuple[int, ...] | None:
    return b.shapes.get(node.output[index])


# ---- element-wise --------------------------------------------------------------------------------------------

def _unary(op_type: str) -> Handler:
    return lambda b, node, attrs: b.call(op_type, [_in(node, 0)], shape=_out_shape(b, node))


def _binary(op_type: str) -> Handler:
    def handler(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
        operands = [_operand(b, node.input[i]) for i in range(2)]
        return b.call(op_type, operands, shape=_out_shape(b, node))
    return handler


def _operand(b: MindIRBuilder, name: str) -> Any:
    """Small constants travel as scalar tensors in Constant nodes, as MindSpore writes `x + 2.0`."""
    if name in b.constants and name not in b.names and b.constants[name].size == 1:
        return b.constants[name].reshape(b.constants[name].shape)
    return Ref(name)


for _onnx, _mindspore in {"Relu": "ReLU", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Erf": "Erf", "Exp": "Exp",
                          "Neg": "Neg", "Sqrt": "Sqrt", "HardSwish": "HSwish", "Abs": "Abs", "Log": "Log",
                          "Reciprocal": "Reciprocal", "Floor": "Floor"}.items():
    OPS[_onnx] = _unary(_mindspore)
for _onnx, _mindspore in {"Add": "Add", "Sub": "Sub", "Mul": "Mul", "Div": "Div", "Pow": "Pow",
                          "Max": "Maximum", "Min": "Minimum"}.items():
    OPS[_onnx] = _binary(_mindspore)


@handles("Identity", "Dropout")
def _alias(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    return Ref(node.input[0])


@handles("Clip")
def _clip(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    low = float(b.const_of(node.input[1])) if _in(node, 1) else attrs.get("min")
    high = float(b.const_of(node.input[2])) if _in(node, 2) else attrs.get("max")
    if low == 0 and high == 6:
        return b.call("ReLU6", [_in(node, 0)], shape=_out_shape(b, node))
    if low == 0 and high is None:
        return b.call("ReLU", [_in(node, 0)], shape=_out_shape(b, node))
    return b.call("ClampScalar", [_in(node, 0), None if low is None else float(low),
                                  None if high is None else float(high)], shape=_out_shape(b, node))


@handles("PRelu", "LeakyRelu")
def _leaky(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    """relu(x) + slope * min(x, 0): MindSpore's PReLU takes one slope per channel of axis 1 only, while ONNX
    broadcasts its slope anyhow, so the sum is written out (it runs exactly on both sides)."""
    x = _in(node, 0)
    negative = b.call("Minimum", [x, np.asarray(0, dtype=np.float32)])
    if node.op_type == "LeakyRelu":
        scaled = b.call("Muls", [negative, float(attrs.get("alpha", 0.01))])
    else:
        scaled = b.call("Mul", [_operand(b, node.input[1]), negative])
    return b.call("Add", [b.call("ReLU", [x]), scaled], shape=_out_shape(b, node))


@handles("HardSigmoid")
def _hard_sigmoid(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    if np.isclose(alpha, 1 / 6) and np.isclose(beta, 0.5):
        return b.call("HSigmoid", [_in(node, 0)], shape=_out_shape(b, node))
    scaled = b.call("Muls", [_in(node, 0), float(alpha)])
    shifted = b.call("Add", [scaled, np.asarray(beta, dtype=np.float32)])
    return b.call("ClampScalar", [shifted, 0.0, 1.0], shape=_out_shape(b, node))


@handles("Gelu")
def _gelu(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    if attrs.get("approximate", "none") == "tanh":
        return b.call("GeLU", [_in(node, 0)], shape=_out_shape(b, node))
    x = _in(node, 0)  # exact: x * (erf(x / sqrt 2) + 1) / 2, as MindSpore's nn.GELU(approximate=False) writes it
    erf = b.call("Erf", [b.call("Div", [x, np.asarray(np.sqrt(2), dtype=np.float32)])])
    return b.call("Mul", [b.call("Mul", [x, b.call("Add", [erf, np.asarray(1, dtype=np.float32)])]),
                          np.asarray(0.5, dtype=np.float32)], shape=_out_shape(b, node))


@handles("Cast")
def _cast(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    if attrs["to"] not in ONNX_TO_MINDSPORE_TYPE_IDS:
        raise UnsupportedModelError(f"Cast to ONNX type {attrs['to']} has no MindSpore counterpart")
    return b.call("Cast", [_in(node, 0), ONNX_TO_MINDSPORE_TYPE_IDS[attrs["to"]]], shape=_out_shape(b, node))


# ---- convolution, normalisation, pooling ----------------------------------------------------------------------

def _explicit_pads(b: MindIRBuilder, node: Any, attrs: dict, kernel: list[int], strides: list[int],
                   dilations: list[int]) -> list[int]:
    """ONNX pads [begins..., ends...] with auto_pad resolved."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", "VALID"):
        return list(attrs.get("pads", [0] * 2 * len(kernel))) if auto_pad == "NOTSET" else [0] * 2 * len(kernel)
    spatial = _shape(b, node)[2:]
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _mindspore_pads(pads: list[int]) -> tuple[int, int, int, int]:
    top, left, bottom, right = pads
    return top, bottom, left, right  # ONNX: begins then ends; MindSpore: top, bottom, left, right


def _conv_attributes(kernel: list[int], pads: list[int], strides: list[int], dilations: list[int], group: int,
                     out_channel: int, pad_mode: str) -> dict[str, Any]:
    pad = _mindspore_pads(pads)
    return {"kernel_size": tuple(kernel), "mode": 1, "out_channel": out_channel, "pad": pad,
            "pad_mode": pad_mode, "format": "NCHW", "pad_list": pad, "groups": group,
            "stride": (1, 1, *strides), "group": group, "dilation": (1, 1, *dilations)}


def _window(node: Any, attrs: dict, kernel: list[int]) -> tuple[list[int], list[int]]:
    return list(attrs.get("strides", [1] * len(kernel))), list(attrs.get("dilations", [1] * len(kernel)))


def _require_2d(b: MindIRBuilder, node: Any) -> None:
    if len(_shape(b, node)) != 4:
        raise UnsupportedModelError(f"{node.op_type} on a {len(_shape(b, node))}-D input: only 2-D (NCHW) "
                                    "convolutions and pooling convert to MindIR")


def _convolution(b: MindIRBuilder, node: Any, attrs: dict) -> tuple[tuple[int, ...], list[int], list[int],
                                                                      list[int]]:
    """Weight shape, kernel, strides and dilations of a 2-D Conv or ConvTranspose."""
    _require_2d(b, node)
    weight_shape = b.shapes.get(node.input[1]) or b.const_of(node.input[1]).shape
    kernel = list(attrs.get("kernel_shape", weight_shape[2:]))
    return (weight_shape, kernel, *_window(node, attrs, kernel))


def _convolution_call(b: MindIRBuilder, node: Any, primitive: str, args: list[Any], attributes: dict[str, Any],
                      shape: tuple[int, ...] | None) -> Any:
    """The convolution primitive, then BiasAdd when the ONNX node has a bias (MindSpore keeps them apart)."""
    bias = _in(node, 2)
    result = b.call(primitive, args, attributes, function=False, shape=None if bias else shape)
    return b.call("BiasAdd", [result, bias, NCHW], shape=shape) if bias else result


@handles("Conv")
def _conv(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    weight_shape, kernel, strides, dilations = _convolution(b, node, attrs)
    pads = _explicit_pads(b, node, attrs, kernel, strides, dilations)
    attributes = _conv_attributes(kernel, pads, strides, dilations, int(attrs.get("group", 1)),
                                  int(weight_shape[0]), "pad")
    return _convolution_call(b, node, "Conv2D", [_in(node, 0), _in(node, 1)], attributes, _out_shape(b, node))


@handles("ConvTranspose")
def _conv_transpose(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    weight_shape, kernel, strides, dilations = _convolution(b, node, attrs)
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedModelError("ConvTranspose with auto_pad SAME is not supported: export explicit pads")
    output_shape = _out_shape(b, node)
    if output_shape is None:
        raise UnsupportedModelError("the output shape of a ConvTranspose is not static")
    attributes = _conv_attributes(kernel, list(attrs.get("pads", [0] * 4)), strides, dilations,
                                  int(attrs.get("group", 1)), int(weight_shape[0]), "PAD")
    return _convolution_call(b, node, "Conv2DTranspose", [_in(node, 0), _in(node, 1), tuple(output_shape)],
                             attributes, output_shape)


@handles("BatchNormalization")
def _batch_norm(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    if attrs.get("training_mode", 0):
        raise UnsupportedModelError("BatchNormalization in training mode: export the model in eval mode")
    outputs = b.call("BatchNorm", [_in(node, i) for i in range(5)] + [
        False, float(attrs.get("epsilon", 1e-5)), float(1 - attrs.get("momentum", 0.9)), NCHW])
    return b.item(outputs, 0)


@handles("LayerNormalization")
def _layer_norm(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    axis = int(attrs.get("axis", -1))
    outputs = b.call("LayerNorm", [_in(node, 0), _in(node, 1), _in(node, 2), axis, axis,
                                   float(attrs.get("epsilon", 1e-5))])
    if not _in(node, 2):
        raise UnsupportedModelError("LayerNormalization without a bias is not supported")
    return b.item(outputs, 0)


@handles("MaxPool")
def _max_pool(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    _require_2d(b, node)
    if len(node.output) > 1 or attrs.get("ceil_mode") or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise UnsupportedModelError("MaxPool with indices, ceil_mode or dilations is not supported")
    kernel = list(attrs["kernel_shape"])
    strides, dilations = _window(node, attrs, kernel)
    pads = _explicit_pads(b, node, attrs, kernel, strides, dilations)
    source: Any = _in(node, 0)
    if any(pads):  # pad with -inf, then pool without padding: exact for any (asymmetric) padding
        source = _pad_v3(b, source, _shape(b, node), pads, "constant", np.float32(-np.inf))
    return b.call("MaxPool", [source], {"pad_mode": "VALID", "kernel_size": (1, 1, *kernel),
                                        "strides": (1, 1, *strides), "format": "NCHW"},
                  function=False, shape=_out_shape(b, node))


@handles("AveragePool")
def _average_pool(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    _require_2d(b, node)
    if attrs.get("ceil_mode"):
        raise UnsupportedModelError("AveragePool with ceil_mode is not supported")
    kernel = list(attrs["kernel_shape"])
    strides, dilations = _window(node, attrs, kernel)
    pads = _explicit_pads(b, node, attrs, kernel, strides, dilations)
    if not any(pads):
        return b.call("AvgPool", [_in(node, 0), tuple(kernel), tuple(strides), PAD_MODE_VALID, NCHW],
                      shape=_out_shape(b, node))
    # padded pooling: MindSpore's 2-D AvgPool only pads "same"; its 3-D one takes explicit pads
    volume = b.call("ExpandDims", [_in(node, 0), 2])
    pad = (0, 0, pads[0], pads[2], pads[1], pads[3])
    pooled = b.call("AvgPool3D", [volume], {
        "kernel_size": (1, 1, 1, *kernel), "strides": (1, 1, 1, *strides), "pad": pad, "ceil_mode": False,
        "divisor_override": 0, "pad_mode": "PAD", "pad_list": pad,
        "count_include_pad": bool(attrs.get("count_include_pad", 0)), "format": "NCDHW"}, function=False)
    return b.call("Squeeze", [pooled, (2,)], shape=_out_shape(b, node))


@handles("GlobalAveragePool")
def _global_average_pool(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    rank = len(_shape(b, node))
    return b.call("ReduceMean", [_in(node, 0), tuple(range(2, rank)), True], shape=_out_shape(b, node))


@handles("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def _reduce(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    axes = attrs.get("axes")
    if axes is None and _in(node, 1):
        axes = b.const_of(node.input[1]).tolist()
    rank = len(_shape(b, node))
    axes = tuple(range(rank)) if not axes else tuple(int(a) % rank for a in axes)
    keep = bool(attrs.get("keepdims", 1))
    args: list[Any] = [_in(node, 0), axes, keep]
    if node.op_type == "ReduceSum":
        args.append(False)  # skip_mode
    return b.call(node.op_type, args, shape=_out_shape(b, node))


# ---- matrix products -----------------------------------------------------------------------------------------

@handles("MatMul")
def _matmul(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    if len(_shape(b, node, 0)) == 2 and len(_shape(b, node, 1)) == 2:
        return b.call("MatMul", [_in(node, 0), _in(node, 1), False, False], shape=_out_shape(b, node))
    return b.call("MatMulExt", [_in(node, 0), _in(node, 1)], shape=_out_shape(b, node))


@handles("Gemm")
def _gemm(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    product: Any = b.call("MatMul", [_in(node, 0), _in(node, 1), bool(attrs.get("transA", 0)),
                                     bool(attrs.get("transB", 0))])
    if attrs.get("alpha", 1.0) != 1.0:
        product = b.call("Muls", [product, float(attrs["alpha"])])
    bias = _in(node, 2)
    if bias is None:
        return product
    if attrs.get("beta", 1.0) != 1.0:
        bias = b.call("Muls", [bias, float(attrs["beta"])])
    if len(b.shapes.get(node.input[2], ())) == 1:
        return b.call("BiasAdd", [product, bias, NCHW], shape=_out_shape(b, node))
    return b.call("Add", [product, bias], shape=_out_shape(b, node))


# ---- shapes ----------------------------------------------------------------------------------------------------

@handles("Reshape")
def _reshape(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    target = _out_shape(b, node)
    if target is None:
        raise UnsupportedModelError("a Reshape whose result shape is not static")
    return b.call("Reshape", [_in(node, 0), tuple(int(d) for d in target)], shape=target)


@handles("Flatten")
def _flatten(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    if attrs.get("axis", 1) == 1:
        return b.call("Flatten", [_in(node, 0)], shape=_out_shape(b, node))
    return _reshape(b, node, attrs)


@handles("Squeeze", "Unsqueeze")
def _squeeze_like(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    # the result's static shape says it all: a Reshape, which MindSpore runs as a view
    return _reshape(b, node, attrs)


@handles("Transpose")
def _transpose(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    perm = attrs.get("perm") or list(reversed(range(len(_shape(b, node)))))
    return b.call("Transpose", [_in(node, 0), tuple(int(p) for p in perm)], shape=_out_shape(b, node))


@handles("Concat")
def _concat(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    parts = b.call("MakeTuple", [Ref(name) for name in node.input], function=False)
    return b.call("Concat", [parts, int(attrs["axis"])], shape=_out_shape(b, node))


@handles("Split")
def _split(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    shape = _shape(b, node)
    axis = int(attrs.get("axis", 0)) % len(shape)
    sizes = [b.shapes[o][axis] for o in node.output]
    results, start = [], 0
    for size in sizes:
        begin = [0] * len(shape)
        end = list(shape)
        begin[axis], end[axis] = start, start + size
        results.append(b.call("StridedSlice", [_in(node, 0), tuple(begin), tuple(end), (1,) * len(shape),
                                               0, 0, 0, 0, 0]))
        start += size
    return tuple(results)


@handles("Slice")
def _slice(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    shape = _shape(b, node)
    starts, ends = b.const_of(node.input[1]).tolist(), b.const_of(node.input[2]).tolist()
    axes = b.const_of(node.input[3]).tolist() if _in(node, 3) else list(range(len(starts)))
    steps = b.const_of(node.input[4]).tolist() if _in(node, 4) else [1] * len(starts)
    begin, end, strides = [0] * len(shape), list(shape), [1] * len(shape)
    for start, stop, axis, step in zip(starts, ends, axes, steps):
        axis %= len(shape)
        begin[axis], end[axis], strides[axis] = _clamped(start, stop, step, shape[axis])
    return b.call("StridedSlice", [_in(node, 0), tuple(begin), tuple(end), tuple(strides), 0, 0, 0, 0, 0],
                  shape=_out_shape(b, node))


def _clamped(start: int, stop: int, step: int, size: int) -> tuple[int, int, int]:
    """ONNX slice bounds (any int64, negatives from the end) as the explicit in-range bounds StridedSlice takes."""
    begin, end, _ = slice(start, stop, step).indices(size)
    if step < 0 and end < 0:
        raise UnsupportedModelError("a reversed Slice running through the first element is not supported")
    return begin, end, step


@handles("Softmax")
def _softmax(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    return b.call("Softmax", [_in(node, 0), (int(attrs.get("axis", -1)),)], shape=_out_shape(b, node))


@handles("Pad")
def _pad(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    pads = b.const_of(node.input[1]).tolist() if _in(node, 1) else list(attrs["pads"])
    if _in(node, 3):
        raise UnsupportedModelError("Pad with an axes input is not supported")
    value = b.const_of(node.input[2]).reshape(()) if _in(node, 2) else np.float32(attrs.get("value", 0.0))
    mode = attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    return _pad_v3(b, _in(node, 0), _shape(b, node), pads, mode, value)


def _pad_v3(b: MindIRBuilder, x: Any, shape: tuple[int, ...], onnx_pads: list[int], mode: str, value: Any) -> Any:
    """ONNX pads (begins for every axis, then ends) as PadV3's pairs from the last axis backwards."""
    rank, half = len(shape), len(onnx_pads) // 2
    begins, ends = [0] * (rank - half) + list(onnx_pads[:half]), [0] * (rank - half) + list(onnx_pads[half:])
    pairs = []
    for axis in reversed(range(rank)):
        pairs += [int(begins[axis]), int(ends[axis])]
    while len(pairs) > 2 and pairs[-2:] == [0, 0]:  # as MindSpore writes them: its reflect mode needs this
        pairs = pairs[:-2]
    mindspore_mode = {"constant": "constant", "reflect": "reflect", "edge": "edge"}.get(mode)
    if mindspore_mode is None:
        raise UnsupportedModelError(f"Pad mode {mode!r} is not supported")
    fill = np.asarray(value, dtype=np.float32).reshape(()) if mindspore_mode == "constant" else None
    padded = tuple(size + begin + end for size, begin, end in zip(shape, begins, ends))
    return b.call("PadV3", [x, tuple(pairs), fill], {"mode": mindspore_mode, "paddings_contiguous": True},
                  function=False, shape=padded)


@handles("Resize", "Upsample")
def _resize(b: MindIRBuilder, node: Any, attrs: dict) -> Any:
    output_shape = _out_shape(b, node)
    if output_shape is None or len(output_shape) != 4:
        raise UnsupportedModelError("Resize needs a static 4-D (NCHW) result shape")
    mode = attrs.get("mode", "nearest")
    transform = attrs.get("coordinate_transformation_mode", "half_pixel" if node.op_type == "Resize" else
                          "asymmetric")
    size = tuple(output_shape[2:])
    if mode == "nearest" and transform == "asymmetric" and attrs.get("nearest_mode", "round_prefer_floor") in (
            "floor",) or mode == "nearest" and node.op_type == "Upsample":
        return b.call("ResizeNearestNeighborV2", [_in(node, 0), size, False, False], shape=output_shape)
    if mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        align = transform == "align_corners"
        return b.call("ResizeBilinearV2", [_in(node, 0), size, align, not align], shape=output_shape)
    raise UnsupportedModelError(f"Resize mode {mode!r} with coordinate transformation {transform!r} is not "
                                "supported")


# ---- the graph ---------------------------------------------------------------------------------------------

def convert(onnx_model: Any, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Any:
    """An onnx.ModelProto as a MindIR ModelProto. MindIR graphs have static shapes: input_shapes fixes the
    inputs' dynamic dimensions (e.g. the batch) before shapes are inferred."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(onnx_model)  # the caller's model stays as it was
    _fix_input_shapes(fixed, input_shapes or {})
    onnx_model = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    graph = onnx_model.graph
    b = MindIRBuilder()
    _record_types(b, graph)
    b.constants.update({t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer})
    nodes = _fold_constants(b, graph, _opset(onnx_model))
    missing = sorted({n.op_type for n in nodes if n.op_type not in OPS})
    if missing:
        raise UnsupportedModelError(f"the ONNX model uses operators the hub cannot convert to MindIR: "
                                    f"{', '.join(missing)}")
    _write_header(b)
    initializer_names = {t.name for t in graph.initializer}
    for value_info in graph.input:
        if value_info.name in initializer_names:
            continue
        _add_input(b, value_info)
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        result = OPS[node.op_type](b, node, attrs)
        results = result if isinstance(result, tuple) else (result,)
        for name, value in zip(node.output, results):
            b.names[name] = b.value(value.name) if not value.mindir else value.name
    _add_outputs(b, graph)
    return b.model


def _fix_input_shapes(onnx_model: Any, input_shapes: dict[str, tuple[int, ...]]) -> None:
    for value_info in onnx_model.graph.input:
        shape = input_shapes.get(value_info.name)
        dims = value_info.type.tensor_type.shape.dim
        if shape is None or len(shape) != len(dims) or any(not isinstance(d, int) or d < 1 for d in shape):
            continue
        for dim, size in zip(dims, shape):
            if not dim.HasField("dim_value"):
                dim.dim_value = size


def _opset(onnx_model: Any) -> int:
    return next((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), 17)


def _record_types(b: MindIRBuilder, graph: Any) -> None:
    for value_info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value_info.type.tensor_type
        b.types[value_info.name] = tensor_type.elem_type
        dims = tensor_type.shape.dim
        if tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            b.shapes[value_info.name] = tuple(d.dim_value for d in dims)
    for initializer in graph.initializer:
        b.shapes[initializer.name] = tuple(initializer.dims)


def _fold_constants(b: MindIRBuilder, graph: Any, opset: int) -> list[Any]:
    """Evaluate nodes whose inputs are all known (Constant nodes, Shape of static shapes, shape arithmetic);
    return the nodes that remain."""
    remaining = []
    for node in graph.node:
        if node.op_type == "Constant":
            import onnx

            b.constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t) \
                if node.attribute[0].name == "value" else np.asarray(onnx.helper.get_attribute_value(node.attribute[0]))
        elif node.op_type == "Shape" and node.input[0] in b.shapes and not node.attribute:
            b.constants[node.output[0]] = np.asarray(b.shapes[node.input[0]], dtype=np.int64)
        elif node.input and all(not i or i in b.constants for i in node.input) and node.op_type not in (
                "RandomNormal", "RandomUniform") and _small(b, node):
            for name, value in zip(node.output, _evaluate(node, b.constants, opset)):
                b.constants[name] = value
        else:
            remaining.append(node)
    return remaining


def _small(b: MindIRBuilder, node: Any) -> bool:
    return all(b.constants[i].size <= FOLDABLE_LIMIT for i in node.input if i)


def _evaluate(node: Any, constants: dict[str, np.ndarray], opset: int) -> list[np.ndarray]:
    import onnx
    from onnx.reference import ReferenceEvaluator

    inputs = [i for i in node.input if i]
    graph = onnx.helper.make_graph(
        [node], "fold", [onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(
            constants[i].dtype), constants[i].shape) for i in inputs],
        [onnx.helper.make_empty_tensor_value_info(o) for o in node.output])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, {i: constants[i] for i in inputs})


def _write_header(b: MindIRBuilder) -> None:
    model = b.model
    model.ir_version, model.producer_name, model.model_version = IR_VERSION, PRODUCER, PRODUCER_VERSION
    model.mind_ir_version, model.little_endian = wire.MIND_IR_VERSION, True
    model.graph.name = GRAPH_NAME


def _add_input(b: MindIRBuilder, value_info: Any) -> None:
    import onnx

    if value_info.name not in b.shapes:
        raise UnsupportedModelError(f"input {value_info.name!r} has no fixed shape; MindIR needs static shapes "
                                    "(give the input a fixed shape with --input NAME:SHAPE)")
    name = f"{GRAPH_NAME}:{value_info.name}"
    info = b.model.graph.input.add(name=name)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(b.types[value_info.name]))
    info.tensor.add(data_type=DATA_TYPES[dtype]).dims.extend(b.shapes[value_info.name])
    b.names[value_info.name] = name


def _add_outputs(b: MindIRBuilder, graph: Any) -> None:
    import onnx

    names = [b.value(o.name) for o in graph.output]
    if len(names) > 1:
        names = [b.call("MakeTuple", [Ref(n, mindir=True) for n in names], function=False).name]
    for name in names:
        info = b.model.graph.output.add(name=name)
        if len(graph.output) == 1 and graph.output[0].name in b.shapes:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(b.types.get(graph.output[0].name, 1)))
            info.tensor.add(data_type=DATA_TYPES[dtype]).dims.extend(b.shapes[graph.output[0].name])


def onnx_to_mindir(source: Path, destination: Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Path:
    import onnx

    model = convert(onnx.load(str(source)), input_shapes)
    destination.write_bytes(model.SerializeToString())
    return destination

