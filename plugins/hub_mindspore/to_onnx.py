"""MindIR -> ONNX, in pure Python: read the MindIR graph with our wire description and emit ONNX nodes.

MindSpore's graph is a sequence of nodes whose op_type "REF::Name:N" names a primitive; settings are primitive
attributes or Constant node inputs; weights are parameters read through Load; Depend/UpdateState/Load/MakeTuple/
TupleGetItem are plumbing. Each node's value here is a Python object: an ONNX tensor name (Tensor), a constant
(int, float, bool, tuple, numpy array, None), a tuple of values, or the MONAD. Handlers (OPS) turn a primitive's
arguments into ONNX nodes. Every primitive without a handler is listed before anything is converted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hub.errors import UnsupportedModelError
from hub_mindspore.handlers import registrar
from hub_mindspore.model_io import clean_name, read_model
from hub_mindspore.values import MONAD, decode, tensor_to_array
from hub_mindspore.wire import AttributeType, GraphProto, ModelProto, NodeProto

OPSET = 17
INT64_MAX = 2**63 - 1
# MindSpore TypeId numbers (the Cast primitive's dtype argument) -> ONNX TensorProto data types
MINDSPORE_TYPE_IDS = {30: 9, 32: 3, 33: 5, 34: 6, 35: 7, 37: 2, 38: 4, 39: 12, 40: 13, 42: 10, 43: 1, 44: 11}


@dataclass(frozen=True)
class Tensor:
    """A value computed in the ONNX graph, by name."""

    name: str


class OnnxBuilder:
    """Collects ONNX nodes and initializers; knows the static shape MindSpore recorded for every value."""

    def __init__(self) -> None:
        import onnx

        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.inputs: list[Any] = []
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def tensor(self, value: Any, dtype: Any = None) -> str:
        """The ONNX name of a value; constants become initializers (Python floats float32, ints int64)."""
        if isinstance(value, Tensor):
            return value.name
        if isinstance(value, (tuple, list)) and all(isinstance(v, Tensor) for v in value) and value:
            raise UnsupportedModelError("a tuple of tensors is used where one tensor is expected")
        array = np.asarray(value, dtype=dtype)
        if dtype is None and array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.fresh("const")
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        self.shapes[name] = array.shape
        return name

    def ints(self, values: Any) -> Tensor:
        return Tensor(self.tensor(np.asarray(values, dtype=np.int64).reshape(-1), np.int64))

    def op(self, op_type: str, inputs: list[Any], outputs: int = 1, **attributes: Any) -> Any:
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        while inputs and inputs[-1] is None:  # optional inputs left out at the end, as ONNX wants
            inputs = inputs[:-1]
        inputs = ["" if i is None else self.tensor(i) for i in inputs]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, names, **attributes))
        results = [Tensor(n) for n in names]
        return results[0] if outputs == 1 else tuple(results)

    def producer(self, value: Any) -> Any:
        """The ONNX node that computes a value, when it is the latest one (nothing else consumed it yet)."""
        if isinstance(value, Tensor) and self.nodes and value.name in self.nodes[-1].output:
            return self.nodes[-1]
        return None

    def shape(self, value: Any) -> tuple[int, ...]:
        if not isinstance(value, Tensor):
            return np.asarray(value).shape
        if value.name not in self.shapes:
            self._infer_shapes()  # the file did not record it (the "shape" attribute is optional)
        if value.name not in self.shapes:
            raise UnsupportedModelError(f"the shape of {value.name} in the MindIR is not static")
        return self.shapes[value.name]

    def _infer_shapes(self) -> None:
        graph = self.onnx.helper.make_graph(self.nodes, "partial", self.inputs, [], initializer=self.initializers)
        model = self.onnx.helper.make_model(graph, opset_imports=[self.onnx.helper.make_opsetid("", OPSET)])
        for info in self.onnx.shape_inference.infer_shapes(model).graph.value_info:
            dims = info.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                self.shapes.setdefault(info.name, tuple(d.dim_value for d in dims))


Handler = Callable[[OnnxBuilder, list[Any], dict[str, Any]], Any]
OPS: dict[str, Handler] = {}
PLUMBING = {"Load", "Depend", "UpdateState", "MakeTuple", "TupleGetItem"}


handles = registrar(OPS)


# ---- plumbing ---------------------------------------------------------------------------------------------

@handles("Load", "Depend")
def _first(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return args[0]


@handles("UpdateState")
def _monad(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return MONAD


@handles("MakeTuple")
def _tuple(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return tuple(args)


@handles("TupleGetItem")
def _item(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    item = args[0][args[1]]
    if item is None:
        raise UnsupportedModelError("the model uses an output of a MindSpore operator that has no ONNX counterpart "
                                    "(e.g. BatchNorm's saved statistics)")
    return item


# ---- element-wise ------------------------------------------------------------------------------------------

def _unary(onnx_op: str) -> Handler:
    return lambda b, args, attrs: b.op(onnx_op, [args[0]])


def _binary(onnx_op: str) -> Handler:
    return lambda b, args, attrs: b.op(onnx_op, [args[0], args[1]])


for _name, _onnx in {"ReLU": "Relu", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Erf": "Erf", "Exp": "Exp",
                     "Neg": "Neg", "Sqrt": "Sqrt", "HSwish": "HardSwish", "Abs": "Abs", "Log": "Log",
                     "Reciprocal": "Reciprocal", "Floor": "Floor"}.items():
    OPS[_name] = _unary(_onnx)
for _name, _onnx in {"Add": "Add", "AddExt": "Add", "Sub": "Sub", "SubExt": "Sub", "Mul": "Mul", "Muls": "Mul",
                     "Div": "Div", "RealDiv": "Div", "Divs": "Div", "Pow": "Pow", "Maximum": "Max",
                     "Minimum": "Min", "MatMulExt": "MatMul"}.items():
    OPS[_name] = _binary(_onnx)


@handles("ReLU6")
def _relu6(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return b.op("Clip", [args[0], np.float32(0), np.float32(6)])


@handles("ClampScalar")
def _clamp(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    low, high = (None if v is None else np.float32(v) for v in args[1:3])
    return b.op("Clip", [args[0], low, high])


@handles("ClampTensor")
def _clamp_tensor(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return b.op("Clip", [args[0], *(None if v is None else np.asarray(v, dtype=np.float32).reshape(())
                                    for v in args[1:3])])


def _arg_extreme_with_value(arg_op: str, reduce_op: str) -> Handler:
    def handler(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
        x, axis, keep = args[0], int(args[1]), int(bool(args[2]))
        return (b.op(arg_op, [x], axis=axis, keepdims=keep),
                b.op(reduce_op, [x], axes=[axis], keepdims=keep))
    return handler


OPS["ArgMaxWithValue"] = _arg_extreme_with_value("ArgMax", "ReduceMax")
OPS["ArgMinWithValue"] = _arg_extreme_with_value("ArgMin", "ReduceMin")


@handles("HSigmoid")
def _hard_sigmoid(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return b.op("HardSigmoid", [args[0]], alpha=1 / 6, beta=0.5)


@handles("GeLU")
def _gelu_tanh(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    # MindSpore's GeLU primitive is the tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    x = args[0]
    cube = b.op("Mul", [b.op("Mul", [x, x]), x])
    inner = b.op("Mul", [b.op("Add", [x, b.op("Mul", [cube, np.float32(0.044715)])]),
                         np.float32(np.sqrt(2 / np.pi))])
    return b.op("Mul", [b.op("Mul", [x, np.float32(0.5)]), b.op("Add", [b.op("Tanh", [inner]), np.float32(1)])])


@handles("Cast")
def _cast(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    if args[1] not in MINDSPORE_TYPE_IDS:
        raise UnsupportedModelError(f"Cast to MindSpore type id {args[1]} is not supported")
    return b.op("Cast", [args[0]], to=MINDSPORE_TYPE_IDS[args[1]])


# ---- convolution, normalisation, pooling ---------------------------------------------------------------------

def _onnx_pads(pad_list: tuple) -> list[int]:
    top, bottom, left, right = pad_list
    return [top, left, bottom, right]  # MindSpore: top, bottom, left, right; ONNX: begins, then ends


@handles("Conv2D")
def _conv(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    _require_nchw(attrs)
    return b.op("Conv", [args[0], args[1]], strides=list(attrs["stride"][2:]),
                dilations=list(attrs["dilation"][2:]), pads=_onnx_pads(attrs["pad_list"]),
                group=int(attrs.get("group", 1)))


@handles("Conv2DTranspose", "Conv2DBackpropInput")
def _conv_transpose(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    _require_nchw(attrs)
    x, weight, output_shape = args[0], args[1], args[2]
    strides, dilations = list(attrs["stride"][2:]), list(attrs["dilation"][2:])
    pads = _onnx_pads(attrs["pad_list"])
    kernel = b.shape(weight)[2:]
    spatial = b.shape(x)[2:]
    output_padding = [int(output_shape[2 + i]) - ((spatial[i] - 1) * strides[i] - pads[i] - pads[i + 2]
                                                   + dilations[i] * (kernel[i] - 1) + 1) for i in range(2)]
    return b.op("ConvTranspose", [x, weight], strides=strides, dilations=dilations, pads=pads,
                group=int(attrs.get("group", 1)), output_padding=output_padding)


@handles("BiasAdd")
def _bias_add(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    x, bias = args[0], args[1]
    producer = b.producer(x)
    if producer is not None and producer.op_type in ("Conv", "ConvTranspose") and len(producer.input) == 2:
        producer.input.append(b.tensor(bias))  # Conv's own bias: one node, as converters downstream expect
        return x
    rank = len(b.shape(x))
    if rank > 2:  # channels are axis 1 (NCHW): the bias broadcasts over the trailing spatial axes
        bias = b.op("Reshape", [bias, b.ints([-1] + [1] * (rank - 2))])
    return b.op("Add", [x, bias])


@handles("BatchNorm")
def _batch_norm(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    x, scale, bias, mean, variance, training, epsilon = args[:7]
    if training:
        raise UnsupportedModelError("a BatchNorm in training mode: export the network after set_train(False)")
    return (b.op("BatchNormalization", [x, scale, bias, mean, variance], epsilon=float(epsilon)),
            None, None, None, None)


@handles("LayerNorm")
def _layer_norm(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    x, scale, bias, begin_norm_axis, begin_params_axis, epsilon = args[:6]
    return b.op("LayerNormalization", [x, scale, bias], axis=int(begin_norm_axis), epsilon=float(epsilon)), \
        None, None


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF/MindSpore "same" padding: the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _window_pads(b: OnnxBuilder, x: Any, kernel: list[int], strides: list[int], same: bool) -> list[int]:
    if not same:
        return [0] * (2 * len(kernel))
    spatial = b.shape(x)[2:]
    pairs = [_same_pads(spatial[i], kernel[i], strides[i]) for i in range(len(kernel))]
    return [p[0] for p in pairs] + [p[1] for p in pairs]


@handles("MaxPool")
def _max_pool(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    _require_nchw(attrs)
    kernel, strides = list(attrs["kernel_size"][2:]), list(attrs["strides"][2:])
    pads = _window_pads(b, args[0], kernel, strides, str(attrs["pad_mode"]).upper() == "SAME")
    return b.op("MaxPool", [args[0]], kernel_shape=kernel, strides=strides, pads=pads)


@handles("MaxPool3DWithArgmax")
def _max_pool_3d(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    pads = list(attrs["pads"])
    pooled = b.op("MaxPool", [args[0]], kernel_shape=list(attrs["ksize"]), strides=list(attrs["strides"]),
                  dilations=list(attrs["dilation"]), pads=pads + pads, ceil_mode=int(attrs["ceil_mode"]))
    return pooled, None


@handles("AvgPool")
def _avg_pool(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    x, kernel, strides, pad_mode, data_format = args[:5]
    if data_format != 0:
        raise UnsupportedModelError("AvgPool in NHWC data format is not supported")
    kernel, strides = list(kernel), list(strides)
    pads = _window_pads(b, x, kernel, strides, same=pad_mode == 1)  # 1: SAME, 2: VALID
    return b.op("AveragePool", [x], kernel_shape=kernel, strides=strides, pads=pads, count_include_pad=0)


@handles("AvgPool3D")
def _avg_pool_3d(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    pad = list(attrs["pad_list"])  # (front, back, top, bottom, left, right)
    if attrs.get("divisor_override"):
        raise UnsupportedModelError("AvgPool3D with divisor_override is not supported")
    return b.op("AveragePool", [args[0]], kernel_shape=list(attrs["kernel_size"][2:]),
                strides=list(attrs["strides"][2:]), pads=pad[0::2] + pad[1::2],
                ceil_mode=int(attrs["ceil_mode"]), count_include_pad=int(attrs["count_include_pad"]))


@handles("AdaptiveAvgPool2D")
def _adaptive_avg_pool(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    if tuple(attrs["output_size"]) != (1, 1):
        raise UnsupportedModelError("AdaptiveAvgPool2D is supported only to 1x1 (global average pooling)")
    return b.op("GlobalAveragePool", [args[0]])


# ---- reductions, matrix products, shapes ---------------------------------------------------------------------

def _reduce(onnx_op: str) -> Handler:
    def handler(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
        axes = list(args[1]) if isinstance(args[1], tuple) else [int(args[1])]
        if not axes:
            axes = list(range(len(b.shape(args[0]))))
        if onnx_op == "ReduceSum":  # an input since opset 13; the others take an attribute until opset 18
            return b.op(onnx_op, [args[0], b.ints(axes)], keepdims=int(bool(args[2])))
        return b.op(onnx_op, [args[0]], axes=axes, keepdims=int(bool(args[2])))
    return handler


for _name, _onnx in {"ReduceMean": "ReduceMean", "MeanExt": "ReduceMean", "ReduceSum": "ReduceSum",
                     "SumExt": "ReduceSum", "ReduceMax": "ReduceMax", "ReduceMin": "ReduceMin"}.items():
    OPS[_name] = _reduce(_onnx)


def _transposed_last(b: OnnxBuilder, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return np.swapaxes(value, -1, -2)
    rank = len(b.shape(value))
    return b.op("Transpose", [value], perm=list(range(rank - 2)) + [rank - 1, rank - 2])


@handles("MatMul", "BatchMatMul")
def _matmul(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    a, other = args[0], args[1]
    transpose_a, transpose_b = (bool(v) for v in args[2:4]) if len(args) >= 4 else (
        bool(attrs.get("transpose_a")), bool(attrs.get("transpose_b")))
    if transpose_a:
        a = _transposed_last(b, a)
    if transpose_b:
        other = _transposed_last(b, other)
    return b.op("MatMul", [a, other])


@handles("Reshape")
def _reshape(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return b.op("Reshape", [args[0], b.ints(args[1])])


@handles("Flatten")
def _flatten(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return b.op("Flatten", [args[0]], axis=1)


@handles("Transpose")
def _transpose(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return b.op("Transpose", [args[0]], perm=list(args[1]))


@handles("Squeeze")
def _squeeze(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    axes = args[1] if len(args) > 1 else attrs.get("axis", ())
    axes = [axes] if isinstance(axes, int) else list(axes)
    return b.op("Squeeze", [args[0], b.ints(axes) if axes else None])


@handles("ExpandDims")
def _expand_dims(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return b.op("Unsqueeze", [args[0], b.ints([int(args[1])])])


@handles("Concat")
def _concat(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return b.op("Concat", list(args[0]), axis=int(args[1]))


@handles("Split")
def _split(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    x, axis, count = args[0], int(args[1]), int(args[2])
    size = b.shape(x)[axis]
    return b.op("Split", [x, b.ints([size // count] * count)], outputs=count, axis=axis)


@handles("StridedSlice")
def _strided_slice(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    x, begin, end, strides, begin_mask, end_mask, ellipsis_mask, new_axis_mask, shrink_mask = args[:9]
    if ellipsis_mask or new_axis_mask:
        raise UnsupportedModelError("StridedSlice with an ellipsis or new-axis mask is not supported")
    starts, ends = [], []
    for axis, (start, stop, step) in enumerate(zip(begin, end, strides)):
        starts.append((INT64_MAX if step < 0 else 0) if begin_mask >> axis & 1 else start)
        if shrink_mask >> axis & 1:
            ends.append(start + 1 if start != -1 else INT64_MAX)
        else:
            ends.append((-INT64_MAX if step < 0 else INT64_MAX) if end_mask >> axis & 1 else stop)
    axes = list(range(len(starts)))
    sliced = b.op("Slice", [x, b.ints(starts), b.ints(ends), b.ints(axes), b.ints(list(strides))])
    shrunk = [axis for axis in axes if shrink_mask >> axis & 1]
    return b.op("Squeeze", [sliced, b.ints(shrunk)]) if shrunk else sliced


@handles("Softmax")
def _softmax(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    axis = args[1] if len(args) > 1 else attrs.get("axis", -1)
    axis = axis[0] if isinstance(axis, tuple) else axis
    return b.op("Softmax", [args[0]], axis=int(axis))


# ---- padding and resizing ----------------------------------------------------------------------------------

def _pad(b: OnnxBuilder, x: Any, pairs: list[tuple[int, int]], mode: str, value: Any = None) -> Any:
    pads = [p[0] for p in pairs] + [p[1] for p in pairs]
    constant = None if value is None or mode != "constant" else np.asarray(value, dtype=np.float32).reshape(())
    return b.op("Pad", [x, b.ints(pads), constant], mode=mode)


@handles("PadV3")
def _pad_v3(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    x, paddings, value = args[0], list(args[1]), args[2] if len(args) > 2 else None
    rank = len(b.shape(x))
    if not attrs.get("paddings_contiguous", True):
        raise UnsupportedModelError("PadV3 with non-contiguous paddings is not supported")
    # (before, after) pairs from the last axis backwards, like torch.nn.functional.pad
    pairs = [(0, 0)] * rank
    for i in range(len(paddings) // 2):
        pairs[rank - 1 - i] = (int(paddings[2 * i]), int(paddings[2 * i + 1]))
    mode = {"constant": "constant", "reflect": "reflect", "edge": "edge", "replicate": "edge"}.get(
        str(attrs.get("mode", "constant")))
    if mode is None:
        raise UnsupportedModelError(f"PadV3 mode {attrs.get('mode')!r} is not supported")
    return _pad(b, x, pairs, mode, value)


@handles("Pad")
def _pad_fixed(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    return _pad(b, args[0], [tuple(p) for p in attrs["paddings"]], "constant", 0.0)


@handles("MirrorPad")
def _mirror_pad(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
    if str(attrs.get("mode", "REFLECT")).upper() != "REFLECT":
        raise UnsupportedModelError("MirrorPad is supported in REFLECT mode only")
    return _pad(b, args[0], [tuple(p) for p in np.asarray(args[1]).tolist()], "reflect")


def _resize(mode: str) -> Handler:
    def handler(b: OnnxBuilder, args: list[Any], attrs: dict) -> Any:
        x, size, align_corners, half_pixel = args[0], list(args[1]), bool(args[2]), bool(args[3])
        transform = "align_corners" if align_corners else ("half_pixel" if half_pixel else "asymmetric")
        extra = {"nearest_mode": "floor"} if mode == "nearest" else {}
        return b.op("Resize", [x, None, None, b.ints(list(b.shape(x)[:2]) + size)], mode=mode,
                    coordinate_transformation_mode=transform, **extra)
    return handler


OPS["ResizeNearestNeighborV2"] = OPS["ResizeNearestNeighbor"] = _resize("nearest")
OPS["ResizeBilinearV2"] = _resize("linear")


def _require_nchw(attrs: dict) -> None:
    if str(attrs.get("format", "NCHW")) != "NCHW":
        raise UnsupportedModelError(f"MindSpore operators in {attrs['format']} format are not supported "
                                    "(export the network in NCHW)")


# ---- the graph -------------------------------------------------------------------------------------------

def primitive_name(node: NodeProto) -> str | None:
    """The primitive a node calls ("REF::Conv2D:4" -> its PrimitiveProto's name "Conv2D:4"); None for Constant."""
    if node.op_type == "Constant":
        return None
    if node.op_type.startswith("REF::"):
        return node.op_type[len("REF::"):]
    return node.op_type


def unsupported_operators(model: ModelProto) -> list[str]:
    primitives = {p.name: p.op_type for p in model.primitives}
    used = {primitives.get(name, name) for node in model.graph.node if (name := primitive_name(node))}
    return sorted(op for op in used if op not in OPS)


def _abstract_shape(attribute: Any) -> Any:
    """The static shape(s) MindSpore recorded on a node (its "shape" attribute)."""
    if attribute.type in (AttributeType.TUPLE, AttributeType.LIST):
        return tuple(_abstract_shape(v) for v in attribute.values)
    if attribute.type == AttributeType.TENSORS and len(attribute.tensors):
        return tuple(attribute.tensors[0].dims)
    return None


def convert(model: ModelProto) -> Any:
    """A MindIR ModelProto as an onnx.ModelProto (opset 17)."""
    import onnx

    if len(model.functions):
        raise UnsupportedModelError("this MindIR calls sub-graphs (control flow or un-inlined cells); export the "
                                    "network in GRAPH_MODE without control flow")
    missing = unsupported_operators(model)
    if missing:
        raise UnsupportedModelError(f"the MindIR uses operators the hub cannot convert to ONNX: {', '.join(missing)}")
    graph = model.graph
    b = OnnxBuilder()
    values: dict[str, Any] = {}
    inputs = b.inputs
    for value_info in graph.input:
        name = clean_name(value_info.name)
        tensor = value_info.tensor[0]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        inputs.append(onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(dtype),
                                                         list(tensor.dims)))
        values[value_info.name] = Tensor(name)
        b.shapes[name] = tuple(tensor.dims)
    for parameter in graph.parameter:
        name = clean_name(parameter.ref_key or parameter.name)
        b.initializers.append(onnx.numpy_helper.from_array(tensor_to_array(parameter), name))
        b.shapes[name] = tuple(parameter.dims)
        values[parameter.name] = Tensor(name)
    _convert_nodes(b, model, values)
    outputs = _graph_outputs(b, graph, values)
    onnx_graph = onnx.helper.make_graph(b.nodes, clean_name(graph.name) or "mindir", inputs, outputs,
                                        initializer=b.initializers)
    onnx_model = onnx.helper.make_model(onnx_graph, producer_name="conversion-hub (from MindIR)",
                                        opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    _infer_output_shapes(onnx_model)
    onnx.checker.check_model(onnx_model)
    return onnx_model


def _infer_output_shapes(onnx_model: Any) -> None:
    """Outputs whose shape MindSpore did not record (tuples) get ONNX's inferred type."""
    import onnx

    inferred = {v.name: v.type for v in onnx.shape_inference.infer_shapes(onnx_model).graph.output}
    for output in onnx_model.graph.output:
        if not output.type.tensor_type.HasField("shape") and output.name in inferred:
            output.type.CopyFrom(inferred[output.name])


def _convert_nodes(b: OnnxBuilder, model: ModelProto, values: dict[str, Any]) -> None:
    primitives = {p.name: p for p in model.primitives}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = decode(next(a for a in node.attribute if a.name == "value"))
            continue
        primitive = primitives[primitive_name(node)]
        attrs = {a.name: decode(a) for a in primitive.attribute}
        args = [_lookup(values, name) for name in node.input]
        result = OPS[primitive.op_type](b, args, attrs)
        shape = next((_abstract_shape(a) for a in node.attribute if a.name == "shape"), None)
        _record_shapes(b, result, shape)
        values[node.output[0]] = result


def _lookup(values: dict[str, Any], name: str) -> Any:
    if name not in values:
        raise UnsupportedModelError(f"the MindIR refers to {name!r} before defining it (a sub-graph call?)")
    return values[name]


def _record_shapes(b: OnnxBuilder, result: Any, shape: Any) -> None:
    if isinstance(result, Tensor) and isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
        b.shapes.setdefault(result.name, shape)
    elif isinstance(result, tuple) and isinstance(shape, tuple) and len(result) == len(shape):
        for item, item_shape in zip(result, shape):
            _record_shapes(b, item, item_shape)


def _graph_outputs(b: OnnxBuilder, graph: GraphProto, values: dict[str, Any]) -> list[Any]:
    import onnx

    results: list[Any] = []
    for value_info in graph.output:
        value = values[value_info.name]
        results.extend(value if isinstance(value, tuple) else [value])
    declared = [v.tensor[0].data_type for v in graph.output if len(v.tensor) == 1]
    element_type = declared[0] if len(declared) == 1 else onnx.TensorProto.FLOAT  # MindIR numbers types as ONNX
    outputs = []
    for index, value in enumerate(results):
        name = f"output_{index}" if len(results) > 1 else "output"
        b.nodes.append(onnx.helper.make_node("Identity", [b.tensor(value)], [name]))
        shape = b.shapes.get(value.name) if isinstance(value, Tensor) else None
        outputs.append(onnx.helper.make_tensor_value_info(name, element_type, shape))
    return outputs


def mindir_to_onnx(source: Path, destination: Path) -> Path:
    import onnx

    onnx.save(convert(read_model(source)), str(destination))
    return destination
