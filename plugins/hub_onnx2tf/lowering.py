"""ONNX rewrites applied to the onnx2tf step's private copy before converting, for operators onnx2tf would lower to
something no TFLite interpreter runs: equivalent graphs of operators it lowers to TFLite builtins.

- 3-D MaxPool and AveragePool become TensorFlow's MaxPool3D/AvgPool3D, which TFLite has only as Flex (select
  TF) operators: a standard interpreter refuses the file. Pooling is separable (the max, or the sum and the
  count of valid elements, over a box is taken axis by axis), so a 3-D pool is a 2-D pool over height and width
  followed by a 1-D pool over depth (written as a 2-D pool with a window of width 1), with reshapes between.
- PRelu on a tensor of rank 5 becomes TFLite's PRELU, which takes rank 4 at most; relu(x) - slope * relu(-x)
  is the same function from operators of any rank.
- Conv with both strides and dilations above 1 fails inside TensorFlow (tf.nn.convolution accepts one or the
  other), and a dilated 3-D Conv becomes a Flex operator; with its stored kernel spread out (zeros between the
  taps) and dilation 1 it computes the same values.

- An LSTM over a short static sequence (forward, default activations, stored weights) becomes its cell's
  operators once per step: onnx2tf writes an LSTM as a TFLite WHILE loop, which ai-edge-quantizer cannot
  calibrate ("Tensor data is null") and TFLite's converter leaves float, so a recurrent model never reached a
  full-integer target. Silero VAD runs one step per call.

For an integer model only:
- Neg on float tensors becomes Mul by -1. TFLite's converter quantizes MUL but leaves NEG float, so one Neg
  kept a whole integer model from being full-integer (Basic Pitch's spectrogram front end has nine).

Only pools whose input shapes are static, and convolutions whose kernel is stored, are rewritten. The step's
verification compares the result with the source like any other conversion.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

POOLS = ("MaxPool", "AveragePool")
CONV3D_KERNEL_RANK = 5  # (out channels, in channels per group, depth, height, width)
PRELU_MAX_RANK = 4  # TFLite's PRELU kernel
NUMPY_BROADCASTING_OPSET = 7
UNSUPPORTED_POOL_ATTRIBUTES = ("dilations", "storage_order")  # non-default values of these are left alone
MAX_UNROLLED_STEPS = 16  # an LSTM over more steps stays one operator (a WHILE loop in TFLite)
LSTM_GATES = ("input", "output", "forget", "cell")  # ONNX's order of the gates in W, R and B
SLICE_AS_INPUTS_OPSET = 10
UNROLLED_SEQUENCE = "/sequence"  # the name ending of an unrolled LSTM's outputs without the direction axis


def lower_for_tflite(model: "onnx.ModelProto", integer: bool = False) -> list[str]:
    """Rewrite, in place, the main graph's nodes described in the module docstring (those for integer models
    where `integer`); what was rewritten."""
    import onnx

    shapes = _static_shapes(model)
    floats = _float_tensors(model) if integer else set()
    rewritten, nodes = [], []
    for index, node in enumerate(model.graph.node):
        replacement = None
        if node.op_type in POOLS:
            replacement = _separable_pool(node, shapes.get(node.input[0]), model, index)
        elif node.op_type == "Conv":
            replacement = _conv_with_dilated_kernel(node, model, index)
        elif node.op_type == "PRelu":
            replacement = _prelu_from_relus(node, shapes.get(node.input[0]), model, index)
        elif node.op_type == "LSTM":
            replacement = _unrolled_lstm(node, shapes.get(node.input[0]), model, index)
        elif node.op_type == "Neg" and node.input[0] in floats:
            replacement = _neg_as_mul(node, index)
        if replacement is None:
            nodes.append(node)
            continue
        nodes.extend(replacement)
        rewritten.append(f"{node.op_type} {node.name or node.output[0]}")
    if rewritten:
        _squeezed_sequences_direct(nodes, model)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.checker.check_model(model)
    return rewritten


def _static_shapes(model: "onnx.ModelProto") -> dict[str, tuple[int, ...]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in tensor_type.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in tensor_type.shape.dim)
    return shapes


def _float_tensors(model: "onnx.ModelProto") -> set[str]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    return {value.name for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
            if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}


def _neg_as_mul(node: "onnx.NodeProto", index: int) -> list["onnx.NodeProto"]:
    import numpy as np
    from onnx import helper, numpy_helper

    name = f"{node.name or node.output[0]}/minus_one{index}"
    return [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(-1.0, np.float32))),
            helper.make_node("Mul", [node.input[0], name], list(node.output), name=node.name)]


def _attributes(node: "onnx.NodeProto") -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _plain_padding(attributes: dict[str, Any]) -> bool:
    auto_pad = attributes.get("auto_pad", b"NOTSET")
    return (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) == "NOTSET"


def _separable_pool(node: "onnx.NodeProto", shape: tuple[int, ...] | None, model: "onnx.ModelProto",
                    index: int) -> list["onnx.NodeProto"] | None:
    """A 5-D pool as reshape -> 2-D pool over (H, W) -> reshape -> pool over D -> reshape."""
    from onnx import helper

    attributes = _attributes(node)
    if shape is None or len(shape) != 5 or len(node.output) != 1 or not _plain_padding(attributes):
        return None
    if any(any(v != 1 for v in attributes[name]) for name in UNSUPPORTED_POOL_ATTRIBUTES if name in attributes):
        return None
    kernel = list(attributes["kernel_shape"])
    strides = list(attributes.get("strides", [1, 1, 1]))
    pads = list(attributes.get("pads", [0] * 6))
    kept = {k: v for k, v in attributes.items() if k not in ("kernel_shape", "strides", "pads", "auto_pad")}
    n, c, d, h, w = shape
    prefix = f"{node.name or node.output[0]}/separable{index}"
    names = [f"{prefix}/{part}" for part in ("planes", "pooled_hw", "columns", "pooled_d")]
    height, width = _pooled(h, kernel[1], strides[1], pads[1], pads[4], kept), \
        _pooled(w, kernel[2], strides[2], pads[2], pads[5], kept)
    depth = _pooled(d, kernel[0], strides[0], pads[0], pads[3], kept)
    shapes = {"to_planes": [n, c * d, h, w], "to_columns": [n, c, d, height * width],
              "to_output": [n, c, depth, height, width]}
    return [
        *(_int64_constant(f"{prefix}/{key}", value) for key, value in shapes.items()),
        helper.make_node("Reshape", [node.input[0], f"{prefix}/to_planes"], [names[0]]),
        helper.make_node(node.op_type, [names[0]], [names[1]], kernel_shape=kernel[1:], strides=strides[1:],
                         pads=[pads[1], pads[2], pads[4], pads[5]], **kept),
        helper.make_node("Reshape", [names[1], f"{prefix}/to_columns"], [names[2]]),
        helper.make_node(node.op_type, [names[2]], [names[3]], kernel_shape=[kernel[0], 1], strides=[strides[0], 1],
                         pads=[pads[0], 0, pads[3], 0], **kept),
        helper.make_node("Reshape", [names[3], f"{prefix}/to_output"], list(node.output)),
    ]


def _pooled(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, attributes: dict[str, Any]) -> int:
    span = size + pad_begin + pad_end - kernel
    if not attributes.get("ceil_mode", 0):
        return span // stride + 1
    count = -(-span // stride) + 1
    # a last window that would start inside the end padding is dropped (ONNX and PyTorch agree)
    return count - 1 if (count - 1) * stride >= size + pad_begin else count


def _prelu_from_relus(node: "onnx.NodeProto", shape: tuple[int, ...] | None, model: "onnx.ModelProto",
                      index: int) -> list["onnx.NodeProto"] | None:
    """PRelu(x, slope) as Relu(x) - slope * Relu(-x), for inputs of a rank TFLite's PRELU does not take. Only
    from opset 7 on, where Mul broadcasts numpy-style as PRelu's slope does (hub_onnx.opset moves older models)."""
    from onnx import helper

    if shape is None or len(shape) <= PRELU_MAX_RANK or _opset(model) < NUMPY_BROADCASTING_OPSET:
        return None
    prefix = f"{node.name or node.output[0]}/relus{index}"
    x, slope = node.input[0], node.input[1]
    return [
        helper.make_node("Relu", [x], [f"{prefix}/positive"]),
        *_neg_as_mul(helper.make_node("Neg", [x], [f"{prefix}/negated"]), index),
        helper.make_node("Relu", [f"{prefix}/negated"], [f"{prefix}/negative_magnitude"]),
        helper.make_node("Mul", [slope, f"{prefix}/negative_magnitude"], [f"{prefix}/scaled"]),
        helper.make_node("Sub", [f"{prefix}/positive", f"{prefix}/scaled"], list(node.output)),
    ]


def _unrolled_lstm(node: "onnx.NodeProto", shape: tuple[int, ...] | None, model: "onnx.ModelProto",
                   index: int) -> list["onnx.NodeProto"] | None:
    """A forward LSTM as its cell, step after step: gates = x W' + h R' + b; c = f c + i g; h = o tanh(c)."""
    import numpy as np
    from onnx import helper, numpy_helper

    attributes = _attributes(node)
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    inputs = list(node.input) + [""] * (8 - len(node.input))
    plain = set(attributes) <= {"hidden_size", "direction", "layout"} and attributes.get("layout", 0) == 0 \
        and attributes.get("direction", b"forward") in (b"forward", "forward")
    if not plain or shape is None or len(shape) != 3 or shape[0] > MAX_UNROLLED_STEPS \
            or _opset(model) < SLICE_AS_INPUTS_OPSET or inputs[4] or inputs[7] \
            or not all(name in stored for name in inputs[1:4] if name):
        return None
    steps, batch, features = shape
    hidden = int(attributes["hidden_size"])
    weights, recurrent = stored[inputs[1]][0], stored[inputs[2]][0]
    bias = stored[inputs[3]][0] if inputs[3] else np.zeros(8 * hidden, np.float32)
    prefix = f"{node.name or node.output[0]}/unrolled{index}"
    constants = {"w": weights.T, "r": recurrent.T, "b": bias[:4 * hidden] + bias[4 * hidden:],
                 "zeros": np.zeros((batch, hidden), np.float32)}
    nodes = [helper.make_node("Constant", [], [f"{prefix}/{name}"],
                              value=numpy_helper.from_array(np.ascontiguousarray(value, np.float32)))
             for name, value in constants.items()]
    for name, values in (("state_shape", [batch, hidden]),
                         ("last_shape", [1, batch, hidden]), ("x_shape", [batch, features]), ("gate_axis", [1]),
                         *((f"{gate}_start", [k * hidden]) for k, gate in enumerate(LSTM_GATES)),
                         *((f"{gate}_end", [(k + 1) * hidden]) for k, gate in enumerate(LSTM_GATES))):
        nodes.append(_int64_constant(f"{prefix}/{name}", values))
    h, c = _initial_state(inputs[5], prefix, "h", nodes), _initial_state(inputs[6], prefix, "c", nodes)
    outputs = []
    for step in range(steps):
        h, c = _lstm_cell(node.input[0], step, h, c, prefix, nodes)
        outputs.append(f"{prefix}/{step}/y")
        nodes.append(helper.make_node("Reshape", [h, f"{prefix}/last_shape"], [outputs[-1]]))
    names = list(node.output) + [""] * (3 - len(node.output))
    if names[0]:  # (steps, batch, hidden), then with its unit direction axis (see _squeezed_sequences_direct)
        nodes += [helper.make_node("Concat", outputs, [f"{prefix}{UNROLLED_SEQUENCE}"], axis=0),
                  _int64_constant(f"{prefix}/sequence_shape", [steps, 1, batch, hidden]),
                  helper.make_node("Reshape", [f"{prefix}{UNROLLED_SEQUENCE}", f"{prefix}/sequence_shape"],
                                   [names[0]])]
    for name, state in ((names[1], h), (names[2], c)):
        if name:
            nodes.append(helper.make_node("Reshape", [state, f"{prefix}/last_shape"], [name]))
    return nodes


def _squeezed_sequences_direct(nodes: list, model: "onnx.ModelProto") -> None:
    """A Squeeze of an unrolled LSTM's direction axis (PyTorch's exports have one after every LSTM) becomes an
    Identity of the 3-D sequence: onnx2tf takes the 4-D (steps, 1, batch, hidden) for channels-first, moves its
    axes, and the Squeeze then fails ("Can not squeeze dim[3], expected a dimension of 1, got 8")."""
    from onnx import helper

    sequences = {n.output[0]: n.input[0] for n in nodes
                 if n.op_type == "Reshape" and n.input[0].endswith(UNROLLED_SEQUENCE)}
    for position, node in enumerate(nodes):
        if node.op_type == "Squeeze" and node.input[0] in sequences and _squeeze_axes(node, nodes, model) == [1]:
            nodes[position] = helper.make_node("Identity", [sequences[node.input[0]]], list(node.output),
                                               name=node.name)


def _squeeze_axes(node: "onnx.NodeProto", nodes: list, model: "onnx.ModelProto") -> list[int] | None:
    from onnx import numpy_helper

    if "axes" in _attributes(node):
        return list(_attributes(node)["axes"])
    if len(node.input) < 2:
        return None
    stored = next((numpy_helper.to_array(t) for t in model.graph.initializer if t.name == node.input[1]), None)
    made = next((numpy_helper.to_array(_attributes(n)["value"]) for n in nodes
                 if n.op_type == "Constant" and n.output[0] == node.input[1] and "value" in _attributes(n)), None)
    found = stored if stored is not None else made
    return None if found is None else [int(a) for a in found.reshape(-1)]


def _initial_state(name: str, prefix: str, part: str, nodes: list) -> str:
    from onnx import helper

    if not name:
        return f"{prefix}/zeros"
    nodes.append(helper.make_node("Reshape", [name, f"{prefix}/state_shape"], [f"{prefix}/{part}0"]))
    return f"{prefix}/{part}0"


def _lstm_cell(x: str, step: int, h: str, c: str, prefix: str, nodes: list) -> tuple[str, str]:
    from onnx import helper

    at = f"{prefix}/{step}"
    nodes += [_int64_constant(f"{at}/index", [step]),
              helper.make_node("Gather", [x, f"{at}/index"], [f"{at}/x_step"], axis=0),
              helper.make_node("Reshape", [f"{at}/x_step", f"{prefix}/x_shape"], [f"{at}/x"]),
              helper.make_node("MatMul", [f"{at}/x", f"{prefix}/w"], [f"{at}/xw"]),
              helper.make_node("MatMul", [h, f"{prefix}/r"], [f"{at}/hr"]),
              helper.make_node("Add", [f"{at}/xw", f"{at}/hr"], [f"{at}/sum"]),
              helper.make_node("Add", [f"{at}/sum", f"{prefix}/b"], [f"{at}/gates"])]
    gate = {}
    for name in LSTM_GATES:
        gate[name] = f"{at}/{name}"
        nodes += [helper.make_node("Slice", [f"{at}/gates", f"{prefix}/{name}_start", f"{prefix}/{name}_end",
                                             f"{prefix}/gate_axis"], [f"{gate[name]}_raw"]),
                  helper.make_node("Tanh" if name == "cell" else "Sigmoid", [f"{gate[name]}_raw"], [gate[name]])]
    nodes += [helper.make_node("Mul", [gate["forget"], c], [f"{at}/kept"]),
              helper.make_node("Mul", [gate["input"], gate["cell"]], [f"{at}/added"]),
              helper.make_node("Add", [f"{at}/kept", f"{at}/added"], [f"{at}/c"]),
              helper.make_node("Tanh", [f"{at}/c"], [f"{at}/c_tanh"]),
              helper.make_node("Mul", [gate["output"], f"{at}/c_tanh"], [f"{at}/h"])]
    return f"{at}/h", f"{at}/c"


def _opset(model: "onnx.ModelProto") -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _conv_with_dilated_kernel(node: "onnx.NodeProto", model: "onnx.ModelProto",
                              index: int) -> list["onnx.NodeProto"] | None:
    """Conv(strides s, dilations d, kernel k) with a stored kernel as Conv(strides s, dilations 1) with the kernel
    spread out to d * (k - 1) + 1 taps, zeros between: the same products, summed over the same positions."""
    import numpy as np
    from onnx import helper, numpy_helper

    attributes = _attributes(node)
    strides = list(attributes.get("strides", []))
    dilations = list(attributes.get("dilations", []))
    weights = next((t for t in model.graph.initializer if len(node.input) > 1 and t.name == node.input[1]), None)
    if weights is None or not _plain_padding(attributes) or not any(d > 1 for d in dilations):
        return None
    kernel = numpy_helper.to_array(weights)
    if not any(s > 1 for s in strides) and kernel.ndim != CONV3D_KERNEL_RANK:
        return None
    spread = np.zeros((*kernel.shape[:2], *(d * (k - 1) + 1 for d, k in zip(dilations, kernel.shape[2:]))),
                      dtype=kernel.dtype)
    spread[(slice(None), slice(None), *(slice(None, None, d) for d in dilations))] = kernel
    name = f"{weights.name}/spread{index}"
    constant = helper.make_node("Constant", [], [name], value=numpy_helper.from_array(spread))
    changed = {**attributes, "dilations": [1] * len(dilations), "kernel_shape": list(spread.shape[2:])}
    conv = helper.make_node("Conv", [node.input[0], name, *node.input[2:]], list(node.output), name=node.name,
                            **changed)
    return [constant, conv]


def _int64_constant(name: str, values: list[int]) -> "onnx.NodeProto":
    """A Constant node, not an initializer: IR versions before 4 require every initializer among the inputs."""
    import numpy as np
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, dtype=np.int64)))
