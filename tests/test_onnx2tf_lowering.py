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


def test_an_rnn_state_input_keeps_its_shape_through_the_route_that_keeps_the_layout(tmp_path):
    """An LSTM fed its state as one (2, batch, hidden) input, as Silero VAD is. onnx2tf moves a 3-D input
    channels-last and hands the LSTM a (hidden, 1) initial state; the channels-first route keeps that input's
    shape absolutely, and its (1, 2, hidden) state output is the source's (2, 1, hidden) with a unit axis moved."""
    torch = pytest.importorskip("torch")
    import warnings

    import hub

    class StatefulCell(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lstm = torch.nn.LSTM(4, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 1)

        def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out, (h, c) = self.lstm(x, (state[:1], state[1:]))
            return torch.sigmoid(self.head(out[:, -1])), torch.cat([h, c])

    source = tmp_path / "cell.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(StatefulCell().eval(), (torch.randn(1, 5, 4), torch.zeros(2, 1, 8)), str(source),
                          dynamo=False, opset_version=17, input_names=["x", "state"],
                          output_names=["prob", "new_state"])
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "samples.npz", x=rng.standard_normal((8, 1, 5, 4)).astype(np.float32),
             state=(0.1 * rng.standard_normal((8, 2, 1, 8))).astype(np.float32))
    result = hub.convert(str(source), to="tflite", calibration=str(tmp_path / "samples.npz"),
                         output=str(tmp_path / "out"))
    assert result.report.route == ["onnx2tf-nchw"]
    assert "initial_state" in result.report.alternatives_tried[0].reason  # the channels-last route, still
    notes = result.report.steps[-1].notes
    assert notes["shape_kept_absolutely"] == ["state"] and notes["outputs_with_unit_axes_moved"] == ["new_state"]
    fidelity = result.report.final.fidelity
    assert fidelity.cosine > 0.99999 and fidelity.max_abs < 1e-5
