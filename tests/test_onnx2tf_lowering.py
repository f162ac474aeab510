"""The rewrites the onnx2tf step applies before converting (hub_onnx2tf.lowering): the same numbers from operators
TFLite runs as builtins. Checked with onnx's reference evaluator on small hand-built graphs, and once end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hub_onnx2tf.lowering import lower_for_tflite


def single_node_model(node: onnx.NodeProto, input_shape: list[int], initializers=(), opset: int = 13,
                      ir_version: int | None = None) -> onnx.ModelProto:
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=list(initializers))
    if ir_version is not None and ir_version < 4:  # initializers must be listed among the inputs then
        graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if ir_version is not None:
        model.ir_version = ir_version
    return model


def outputs_before_and_after(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    before = ReferenceEvaluator(model).run(None, {"x": x})[0]
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, list(before.shape)))
    rewritten = lower_for_tflite(model)
    after = ReferenceEvaluator(model).run(None, {"x": x})[0]
    return before, after, rewritten


@pytest.mark.parametrize("op_type,extra", [
    ("MaxPool", {}),
    ("AveragePool", {}),
    ("AveragePool", {"count_include_pad": 1}),
    ("MaxPool", {"ceil_mode": 1}),
])
def test_a_3d_pool_becomes_2d_pools_with_the_same_values(op_type, extra):
    node = helper.make_node(op_type, ["x"], ["y"], kernel_shape=[2, 3, 2], strides=[2, 1, 2],
                            pads=[1, 0, 1, 0, 1, 1], **extra)
    model = single_node_model(node, [2, 3, 5, 6, 7])
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6, 7)).astype(np.float32)
    before, after, rewritten = outputs_before_and_after(model, x)
    assert rewritten == [f"{op_type} y"]
    assert {n.op_type for n in model.graph.node} <= {op_type, "Reshape", "Constant"}
    assert all(len(a.ints) == 2 for n in model.graph.node for a in n.attribute if a.name == "kernel_shape")
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,strides,dilations", [
    ([1, 2, 9, 9], [2, 2], [2, 2]),
    ([1, 2, 6, 7, 7], [1, 1, 1], [2, 1, 2]),
])
def test_a_dilated_conv_gets_a_spread_kernel_with_the_same_values(shape, strides, dilations):
    rank = len(shape) - 2
    rng = np.random.default_rng(1)
    weights = numpy_helper.from_array(rng.standard_normal((4, 2, *[3] * rank)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=strides, dilations=dilations, pads=[1] * 2 * rank)
    model = single_node_model(node, shape, [weights], opset=6, ir_version=3)
    before, after, rewritten = outputs_before_and_after(model, rng.standard_normal(shape).astype(np.float32))
    assert rewritten == ["Conv y"]
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert next(a.ints for a in conv.attribute if a.name == "dilations") == [1] * rank
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_a_5d_prelu_becomes_relus_with_the_same_values():
    slope = numpy_helper.from_array(np.array([0.1, 0.5, 2.0], dtype=np.float32).reshape(3, 1, 1, 1), "slope")
    model = single_node_model(helper.make_node("PRelu", ["x", "slope"], ["y"]), [2, 3, 2, 3, 4], [slope])
    before, after, rewritten = outputs_before_and_after(
        model, np.random.default_rng(4).standard_normal((2, 3, 2, 3, 4)).astype(np.float32))
    assert rewritten == ["PRelu y"] and "PRelu" not in {n.op_type for n in model.graph.node}
    np.testing.assert_allclose(after, before, rtol=1e-6)


def test_neg_becomes_a_product_with_minus_one_for_integer_models_only():
    model = single_node_model(helper.make_node("Neg", ["x"], ["y"], name="flip"), [1, 3, 4])
    x = np.random.default_rng(12).standard_normal((1, 3, 4)).astype(np.float32)
    assert outputs_before_and_after(model, x)[2] == []  # a float model keeps its Neg
    before = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert lower_for_tflite(model, integer=True) == ["Neg flip"]
    assert [n.op_type for n in model.graph.node] == ["Constant", "Mul"]
    np.testing.assert_array_equal(ReferenceEvaluator(model).run(None, {"x": x})[0], before)


@pytest.mark.slow
def test_a_model_with_neg_reaches_tflite_arm_fully_integer(tmp_path):
    """TFLite's converter leaves NEG float; as a product with -1 it quantizes (the step refuses float operators)."""
    import hub

    weights = numpy_helper.from_array(
        (0.3 * np.random.default_rng(13).standard_normal((4, 3, 3, 3))).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Neg", ["conv"], ["flipped"], name="flip"),
             helper.make_node("Relu", ["flipped"], ["y"])]
    graph = helper.make_graph(nodes, "neg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              initializer=[weights])
    source = tmp_path / "neg.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(source))
    np.savez(tmp_path / "samples.npz",
             x=np.random.default_rng(14).standard_normal((64, 1, 3, 8, 8)).astype(np.float32))
    result = hub.convert(str(source), to="tflite-arm", calibration=str(tmp_path / "samples.npz"),
                         output=str(tmp_path / "out"))
    assert result.report.route == ["onnx2tf-int8"]
    assert result.report.steps[-1].notes["rewritten_for_tflite_builtins"] == ["Neg flip"]
    assert result.report.final.fidelity.cosine > 0.99


def test_what_tflite_runs_already_is_left_alone():
    rng = np.random.default_rng(2)
    weights = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    conv = single_node_model(helper.make_node("Conv", ["x", "w"], ["y"], dilations=[2, 2]), [1, 2, 9, 9],
                             [weights])
    pool = single_node_model(helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2]), [1, 2, 4, 4])
    x = np.zeros((1, 2, 9, 9), dtype=np.float32)
    prelu = single_node_model(helper.make_node("PRelu", ["x", "slope"], ["y"]), [1, 2, 9, 9],
                              [numpy_helper.from_array(np.ones((2, 1, 1), dtype=np.float32), "slope")])
    assert outputs_before_and_after(conv, x)[2] == [] and outputs_before_and_after(pool, x[:, :, :4, :4])[2] == []
    assert outputs_before_and_after(prelu, x)[2] == []


@pytest.mark.slow
def test_a_3d_average_pool_converts_to_a_tflite_file_the_interpreter_loads(tmp_path):
    import hub
    from hub.verification import from_layout, to_layout
    from hub_litert.interpreter import run_samples

    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2, 2], strides=[2, 2, 2])
    model = single_node_model(node, [2, 3, 4, 4, 4])
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 2, 2, 2]))
    source = tmp_path / "pool3d.onnx"
    onnx.save(model, str(source))
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "samples.npz", x=x[None])
    result = hub.convert(str(source), to="tflite", calibration=str(tmp_path / "samples.npz"),
                         output=str(tmp_path / "out"), use_cache=False)
    # onnx2tf moves the 5-D input channels-last but leaves the reshaped 5-D output channels-first: the step says
    # so, and verification moves back only the outputs that were moved
    assert result.report.route == ["onnx2tf"] and result.report.final.state.endswith("/nhwc")
    assert result.report.steps[-1].notes["outputs_left_in_source_layout"] == ["y"]
    (got,) = run_samples(Path(result.path), [{"x": to_layout(x, "nhwc")}], 1)[0]
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(from_layout(got, "nhwc", {expected.shape}), expected, rtol=1e-5, atol=1e-6)


def test_computed_pads_are_folded_before_onnx2tf_converts_them(tmp_path):
    """torch.onnx's TorchScript exporter writes F.pad as a subgraph computing the pads (ConstantOfShape, Concat,
    Slice, Transpose, Reshape, Cast -> Pad). Unfolded, onnx2tf padded the batch axis: logits (N>1, 4) for (1, 4)."""
    torch = pytest.importorskip("torch")
    import hub
    from hub_litert.interpreter import run_samples

    class PaddedNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(torch.nn.functional.pad(x, [0, 1, 0, 1])).mean(dim=(2, 3))

    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    source = tmp_path / "padded.onnx"
    torch.onnx.export(PaddedNet().eval(), (torch.from_numpy(x),), str(source), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"])
    assert "ConstantOfShape" in {node.op_type for node in onnx.load(str(source)).graph.node}
    np.savez(tmp_path / "samples.npz", x=np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32))
    result = hub.convert(str(source), to="tflite", calibration=str(tmp_path / "samples.npz"),
                         output=str(tmp_path / "out"), max_routes=1)
    assert result.report.route[-1].startswith("onnx2tf")
    assert result.report.steps[-1].notes["constant_nodes_folded"] > 0
    (got,) = run_samples(Path(result.path), [{"x": x.transpose(0, 2, 3, 1)}], 1)[0]
    np.testing.assert_allclose(got, ReferenceEvaluator(onnx.load(str(source))).run(None, {"x": x})[0], atol=1e-5)


def test_a_paddle_style_graph_with_at_signs_in_node_names_and_minus_one_dims_converts(tmp_path):
    """paddle2onnx names nodes "Softmax@0" (TF refuses them as scope names) and declares dynamic axes as -1
    ("Dimension -1 must be >= 0" in onnx2tf): the step's copy is tidied first."""
    import hub
    from hub_litert.interpreter import run_samples

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((6, 2)).astype(np.float32), "fc.w")
    nodes = [helper.make_node("MatMul", ["x", "fc.w"], ["fc.out"], name="MatMul@0"),
             helper.make_node("Softmax", ["fc.out"], ["probabilities"], name="Softmax@0", axis=1)]
    graph = helper.make_graph(nodes, "paddle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 6])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [-1, 2])],
                              initializer=[weight])
    source = tmp_path / "paddle.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(source))
    np.savez(tmp_path / "samples.npz", x=rng.standard_normal((8, 6)).astype(np.float32))

    result = hub.convert(str(source), to="tflite", calibration=str(tmp_path / "samples.npz"),
                         output=str(tmp_path / "out"), max_routes=1)

    notes = result.report.steps[-1].notes
    assert notes["nodes_renamed_for_tf"] == 2 and notes["dimensions_made_unknown"] >= 1
    x = rng.standard_normal((1, 6)).astype(np.float32)
    (got,) = run_samples(Path(result.path), [{"x": x}], 1)[0]
    np.testing.assert_allclose(got, ReferenceEvaluator(onnx.load(str(source))).run(None, {"x": x})[0], atol=1e-5)


def test_channels_last_inputs_keep_their_layout_through_the_route_that_keeps_it(tmp_path):
    """A TensorFlow-born graph takes (1, 8, 8, 3) and transposes it channels-first itself. onnx2tf's default
    would take it as (1, 8, 3, 8): that step refuses, and onnx2tf-nchw delivers the input as the source has it."""
    import hub
    from hub_litert.interpreter import describe_tflite, run_samples

    rng = np.random.default_rng(5)
    weights = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["x_nchw", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 4])],
                              initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    source = tmp_path / "nhwc.onnx"
    onnx.save(model, str(source))
    x = rng.standard_normal((4, 1, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "samples.npz", x=x)
    result = hub.convert(str(source), to="tflite", calibration=str(tmp_path / "samples.npz"),
                         output=str(tmp_path / "out"), use_cache=False)
    (refused,) = result.report.alternatives_tried
    assert refused.step == "onnx2tf" and "are channels-last already" in refused.reason
    assert result.report.route == ["onnx2tf-nchw"]
    assert [spec.shape for spec in describe_tflite(Path(result.path)).inputs] == [(1, 8, 8, 3)]
    (got,) = run_samples(Path(result.path), [{"x": x[0]}], 1)[0]
    np.testing.assert_allclose(got, ReferenceEvaluator(model).run(None, {"x": x[0]})[0], atol=1e-4)


def test_reshape_targets_computed_from_shapes_fold_round_after_round(tmp_path):
    """PP-OCR's recognizer computes each Reshape target from the Shape of the previous Reshape's result: one
    more folds per round of shape inference. Left computed, onnx2tf flattened (1, 40, 120) to (1, 1, 4800)."""
    from hub_onnx2tf.convert import _tidy_for_onnx2tf

    def flatten_last_two(source: str, name: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Shape", [source], [f"{name}_shape"]),
                helper.make_node("Slice", [f"{name}_shape", "zero", "two"], [f"{name}_head"]),
                helper.make_node("Concat", [f"{name}_head", "minus_one"], [f"{name}_target"], axis=0),
                helper.make_node("Reshape", [source, f"{name}_target"], [name])]

    nodes = [*flatten_last_two("x", "flat"), helper.make_node("Unsqueeze", ["flat", "three"], ["grown"]),
             *flatten_last_two("grown", "again"), helper.make_node("Transpose", ["again"], ["y"], perm=[0, 2, 1])]
    constants = [numpy_helper.from_array(np.array([value], np.int64), name)
                 for name, value in (("zero", 0), ("two", 2), ("minus_one", -1), ("three", 3))]
    graph = helper.make_graph(nodes, "chained", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               ["n", 4, 1, "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "chained.onnx"
    onnx.save(model, str(path))
    changed = _tidy_for_onnx2tf(path, {"x": (1, 4, 1, 10)}, fold=True)
    tidied = onnx.load(str(path))
    assert changed["constant_nodes_folded"] >= 6
    assert [n.op_type for n in tidied.graph.node if n.op_type in ("Shape", "Concat")] == []
    x = np.random.default_rng(6).standard_normal((1, 4, 1, 10)).astype(np.float32)
    np.testing.assert_array_equal(ReferenceEvaluator(tidied).run(None, {"x": x})[0],
                                  ReferenceEvaluator(model).run(None, {"x": x})[0])


def nested_shape_ifs_model() -> onnx.ModelProto:
    """Silero VAD's pattern: an If on a dimension whose branch holds another If with two outputs, each output
    made by its own node (Identity in one branch, Unsqueeze in the other)."""
    def branch(name: str, nodes: list[onnx.NodeProto], outputs: list[str]) -> onnx.GraphProto:
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                   for o in outputs])

    inner = helper.make_node("If", ["wide"], ["kept_a", "kept_b"], name="inner", then_branch=branch(
        "inner_then", [helper.make_node("Identity", ["a"], ["a_same"]), helper.make_node("Identity", ["b"], ["b_same"])],
        ["a_same", "b_same"]), else_branch=branch(
        "inner_else", [helper.make_node("Unsqueeze", ["a", "zero"], ["a_up"]),
                       helper.make_node("Unsqueeze", ["b", "zero"], ["b_up"])], ["a_up", "b_up"]))
    outer_then = branch("outer_then", [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"]),
                                       inner, helper.make_node("Sub", ["kept_a", "kept_b"], ["picked"])], ["picked"])
    outer_else = branch("outer_else", [helper.make_node("Identity", ["x"], ["same"])], ["same"])
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero_index"], ["batch"]),
             helper.make_node("Equal", ["batch", "one"], ["single"]),
             helper.make_node("Gather", ["shape", "one_index"], ["width"]),
             helper.make_node("Equal", ["width", "one"], ["wide"]),
             helper.make_node("If", ["single"], ["y"], name="outer", then_branch=outer_then, else_branch=outer_else)]
    constants = [numpy_helper.from_array(np.array(value, np.int64), name) for name, value in
                 (("zero", [0]), ("zero_index", 0), ("one_index", 1), ("one", 1))]
    graph = helper.make_graph(nodes, "guarded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_ifs_that_the_concrete_shapes_decide_are_replaced_by_the_branch_they_take(tmp_path):
    from hub_onnx2tf.convert import _tidy_for_onnx2tf

    model = nested_shape_ifs_model()
    path = tmp_path / "guarded.onnx"
    onnx.save(model, str(path))
    _tidy_for_onnx2tf(path, {"x": (1, 6)}, fold=True)
    tidied = onnx.load(str(path))
    assert "If" not in {node.op_type for node in tidied.graph.node}
    x = np.random.default_rng(7).standard_normal((1, 6)).astype(np.float32)
    np.testing.assert_array_equal(ReferenceEvaluator(tidied).run(None, {"x": x})[0],
                                  ReferenceEvaluator(model).run(None, {"x": x})[0])


def stateful_lstm(folder: Path, samples: int = 8) -> Path:
    """An LSTM fed its state as one (2, batch, hidden) input, as Silero VAD is, exported to ONNX, with samples
    beside it (samples.npz)."""
    torch = pytest.importorskip("torch")
    import warnings

    class StatefulCell(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lstm = torch.nn.LSTM(4, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 1)

        def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out, (h, c) = self.lstm(x, (state[:1], state[1:]))
            return torch.sigmoid(self.head(out[:, -1])), torch.cat([h, c])

    source = folder / "cell.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(StatefulCell().eval(), (torch.randn(1, 5, 4), torch.zeros(2, 1, 8)), str(source),
                          dynamo=False, opset_version=17, input_names=["x", "state"],
                          output_names=["prob", "new_state"])
    rng = np.random.default_rng(0)
    np.savez(folder / "samples.npz", x=rng.standard_normal((samples, 1, 5, 4)).astype(np.float32),
             state=(0.1 * rng.standard_normal((samples, 2, 1, 8))).astype(np.float32))
    return source


def test_an_rnn_state_input_keeps_its_shape_through_the_route_that_keeps_the_layout(tmp_path):
    """onnx2tf moves a 3-D input channels-last, which scrambles the state; the channels-first route keeps that
    input's shape absolutely, and its (1, 2, hidden) state output is the source's (2, 1, hidden) with a unit
    axis moved."""
    import hub

    source = stateful_lstm(tmp_path)
    result = hub.convert(str(source), to="tflite", calibration=str(tmp_path / "samples.npz"),
                         output=str(tmp_path / "out"))
    assert result.report.route == ["onnx2tf-nchw"]
    # the channels-last route unrolls the LSTM but moves the state's axes: verification rejects its state
    assert "output new_state: cosine" in result.report.alternatives_tried[0].reason
    notes = result.report.steps[-1].notes
    assert notes["shape_kept_absolutely"] == ["state"] and notes["outputs_with_unit_axes_moved"] == ["new_state"]
    fidelity = result.report.final.fidelity
    assert fidelity.cosine > 0.99999 and fidelity.max_abs < 1e-5


def conv1d_as_tf2onnx_writes_it(slice_axes: list[int]) -> onnx.ModelProto:
    """tf2onnx's Conv1D on channels-last (1, steps, features), as Magika's classifier has it: unsqueeze to a unit
    width, move the features to axis 1, Conv2D, then a Slice that keeps everything (its bounds listed over
    `slice_axes`, the width's end at 1) and a Squeeze of the width. The input is flat, as Magika's bytes are."""
    rng = np.random.default_rng(8)
    weight = numpy_helper.from_array((0.3 * rng.standard_normal((4, 8, 3, 1))).astype(np.float32), "weight")
    ends = {0: 2**31 - 1, 1: 2**31 - 1, 2: 2**31 - 1, 3: 1}
    constants = [weight, numpy_helper.from_array(np.array([3], np.int64), "unit_axis"),
                 numpy_helper.from_array(np.zeros(4, np.int64), "starts"),
                 numpy_helper.from_array(np.array([ends[axis] for axis in slice_axes], np.int64), "ends"),
                 numpy_helper.from_array(np.array(slice_axes, np.int64), "axes"),
                 numpy_helper.from_array(np.array([1, 16, 8], np.int64), "steps_by_features")]
    nodes = [helper.make_node("Reshape", ["x", "steps_by_features"], ["sequence"]),
             helper.make_node("Unsqueeze", ["sequence", "unit_axis"], ["wide"]),
             helper.make_node("Transpose", ["wide"], ["first"], perm=[0, 2, 1, 3]),
             helper.make_node("Conv", ["first", "weight"], ["conv"], kernel_shape=[3, 1]),
             helper.make_node("Slice", ["conv", "starts", "ends", "axes"], ["kept"], name="keeps_everything"),
             helper.make_node("Squeeze", ["kept", "unit_axis"], ["squeezed"]),
             helper.make_node("Relu", ["squeezed"], ["y"])]
    graph = helper.make_graph(nodes, "conv1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 14])],
                              initializer=constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("slice_axes", [[0, 1, 2, 3], [0, 2, 1, 3]])
def test_slices_list_only_the_axes_they_cut(tmp_path, slice_axes):
    from hub_onnx2tf.convert import _tidy_for_onnx2tf

    model = conv1d_as_tf2onnx_writes_it(slice_axes)
    path = tmp_path / "conv1d.onnx"
    onnx.save(model, str(path))
    assert _tidy_for_onnx2tf(path, {"x": (1, 128)}, fold=True)["slices_made_plain"] == 1
    tidied = onnx.load(str(path))
    assert "Slice" not in {node.op_type for node in tidied.graph.node}
    x = np.random.default_rng(9).standard_normal((1, 128)).astype(np.float32)
    np.testing.assert_array_equal(ReferenceEvaluator(tidied).run(None, {"x": x})[0],
                                  ReferenceEvaluator(model).run(None, {"x": x})[0])


def test_a_slice_keeps_its_cuts_sorted_by_axis(tmp_path):
    from hub_onnx2tf.convert import _tidy_for_onnx2tf

    constants = [numpy_helper.from_array(np.array(values, np.int64), name) for name, values in
                 (("starts", [0, -3, 0]), ("ends", [2**31 - 1, 2**31 - 1, 5]), ("axes", [0, 2, 1]))]
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="cut")
    graph = helper.make_graph([node], "cut", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "cut.onnx"
    onnx.save(model, str(path))
    _tidy_for_onnx2tf(path, {"x": (1, 6, 7)}, fold=False)
    tidied = onnx.load(str(path))
    bounds = {init.name.rsplit("_", 1)[-1]: numpy_helper.to_array(init).tolist() for init in tidied.graph.initializer}
    assert bounds == {"starts": [0, -3], "ends": [5, 2**31 - 1], "axes": [1, 2], "steps": [1, 1]}
    x = np.random.default_rng(10).standard_normal((1, 6, 7)).astype(np.float32)
    np.testing.assert_array_equal(ReferenceEvaluator(tidied).run(None, {"x": x})[0],
                                  ReferenceEvaluator(model).run(None, {"x": x})[0])


def test_a_tf2onnx_conv1d_reaches_tflite_with_the_source_numbers(tmp_path):
    """End to end: without the plain Slice, onnx2tf sliced the Conv's channels-last result to one channel."""
    import hub

    source = tmp_path / "conv1d.onnx"
    onnx.save(conv1d_as_tf2onnx_writes_it([0, 1, 2, 3]), str(source))
    np.savez(tmp_path / "samples.npz",
             x=np.random.default_rng(11).standard_normal((8, 1, 128)).astype(np.float32))
    result = hub.convert(str(source), to="tflite", calibration=str(tmp_path / "samples.npz"),
                         output=str(tmp_path / "out"))
    assert result.report.route == ["onnx2tf"] and result.report.final.fidelity.cosine > 0.99999
    assert result.report.steps[-1].notes["slices_made_plain"] == 1


def test_a_short_lstm_becomes_its_cell_step_after_step():
    torch = pytest.importorskip("torch")
    import io
    import warnings

    import onnxruntime as ort

    lstm = torch.nn.LSTM(4, 8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lstm.eval(), (torch.randn(3, 1, 4), (torch.zeros(1, 1, 8), torch.zeros(1, 1, 8))),
                          buffer, dynamo=False, opset_version=17, input_names=["x", "h", "c"],
                          output_names=["y", "h_last", "c_last"])
    model = onnx.load_from_string(buffer.getvalue())
    rng = np.random.default_rng(15)
    feeds = {name: rng.standard_normal(shape).astype(np.float32)
             for name, shape in (("x", (3, 1, 4)), ("h", (1, 1, 8)), ("c", (1, 1, 8)))}
    before = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    assert [r.split()[0] for r in lower_for_tflite(model)] == ["LSTM"]
    assert "LSTM" not in {node.op_type for node in model.graph.node}
    after = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    for expected, got in zip(before, after, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.slow
def test_a_stateful_lstm_reaches_tflite_arm_without_a_while_loop(tmp_path):
    """onnx2tf writes an LSTM as a WHILE loop, which ai-edge-quantizer cannot calibrate; unrolled, the route
    through a float file and ai-edge-quantizer gives a full-integer model."""
    import hub
    from hub_litert.interpreter import open_interpreter

    source = stateful_lstm(tmp_path, samples=64)
    result = hub.convert(str(source), to="tflite-arm", calibration=str(tmp_path / "samples.npz"),
                         output=str(tmp_path / "out"))
    assert result.report.route == ["onnx2tf-nchw", "ai-edge-quantizer-int8"]
    assert any(r.startswith("LSTM") for r in result.report.steps[0].notes["rewritten_for_tflite_builtins"])
    operators = {op["op_name"] for op in open_interpreter(Path(result.path), delegates=False)._get_ops_details()}
    assert "WHILE" not in operators and operators & {"FULLY_CONNECTED", "BATCH_MATMUL"}
    assert result.report.final.fidelity.cosine > 0.98


def test_an_integer_input_times_zero_folds_away(tmp_path):
    """Silero VAD keeps its sample-rate input in the graph as state + Cast(sr * 0): folded, no float Cast of an
    integer is left to keep the int8 model from being fully integer."""
    from hub_onnx2tf.convert import _tidy_for_onnx2tf

    nodes = [helper.make_node("Mul", ["sr", "zero"], ["nothing"]),
             helper.make_node("Cast", ["nothing"], ["nothing_float"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "nothing_float"], ["y"])]
    graph = helper.make_graph(nodes, "kept_input", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                                    helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.array(0, np.int64), "zero")])
    path = tmp_path / "kept_input.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    _tidy_for_onnx2tf(path, {"x": (1, 4), "sr": ()}, fold=True)
    assert {node.op_type for node in onnx.load(str(path)).graph.node} == {"Add"}
