"""The built-in ONNX plugins: format detection and description, the ONNX -> ONNX compressors, the ORT backend.

Models are built here: a tiny CNN (Conv+BN+ReLU, depthwise Conv+BN+ReLU, pointwise Conv, Linear) exported
with torch's legacy exporter, and hand-made graphs from onnx.helper.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.declarations import StepContext
from hub.errors import StepDeclinedError, UnsupportedModelError, UsageError
from hub.states import ModelState, TensorSpec
from hub_onnx.cleanup import run_onnxslim, run_quant_preprocess
from hub_onnx.half import run_fp16
from hub_onnx.model_file import describe_onnx, detect_onnx, load_model
from hub_onnx.quantize import run_dynamic_int8, run_static_int8
from hub_onnxruntime.session import median_latency_ms, run_samples

INPUT_SHAPE = (3, 16, 16)
CALIBRATION_SAMPLES = 24


def tiny_cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 100),
    )
    for module in model:
        if isinstance(module, nn.BatchNorm2d):  # non-trivial statistics so that fusing them matters
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory) -> Path:
    import torch

    path = tmp_path_factory.mktemp("source") / "cnn.onnx"
    with warnings.catch_warnings():  # the legacy exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(tiny_cnn(), torch.zeros(1, *INPUT_SHAPE), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "images.npz"
    images = np.random.default_rng(1).standard_normal((CALIBRATION_SAMPLES, *INPUT_SHAPE)).astype(np.float32)
    np.savez(path, images=images)  # the key is not the input name: one array for one input is used anyway
    return path


@pytest.fixture(scope="module")
def samples(calibration) -> list[dict[str, np.ndarray]]:
    images = np.load(calibration)["images"]
    return [{"image": images[i:i + 1]} for i in range(len(images))]


@pytest.fixture(scope="module")
def optimized_model(fp32_model, tmp_path_factory) -> Path:
    return run_onnxslim(context(fp32_model, tmp_path_factory.mktemp("slim")))


def context(model: Path, workdir: Path, calibration: Path | None = None, **options) -> StepContext:
    workdir.mkdir(parents=True, exist_ok=True)
    return StepContext(input_path=model, workdir=workdir, options=options, calibration=calibration,
                       inputs=(TensorSpec("image", (None, *INPUT_SHAPE)),))


def outputs(model: Path, samples: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([result[0] for result in run_samples(model, samples, threads=1)])


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def folder_listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_size) for p in folder.iterdir())


# --- detection and description ---------------------------------------------------------------------------

def test_detects_fp32_export_as_raw_fp32(fp32_model):
    assert detect_onnx(fp32_model) == {"precision": "fp32", "graph": "raw"}


@pytest.mark.parametrize("content", [b"", b"hello, this is text\n", b"\x00" * 64, b"\x08\x07",
                                     b"\x08\x07\x12\xff\xff\xff\xff\x0f garbage", bytes(range(256))])
def test_detect_rejects_foreign_content_named_onnx(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    assert detect_onnx(path) is None


def test_detect_rejects_truncated_model_and_directories(fp32_model, tmp_path):
    data = fp32_model.read_bytes()
    for cut in (len(data) // 2, len(data) - 3, 40):
        truncated = tmp_path / f"cut{cut}.onnx"
        truncated.write_bytes(data[:cut])
        assert detect_onnx(truncated) is None, cut
    assert detect_onnx(tmp_path) is None
    assert detect_onnx(tmp_path / "missing.onnx") is None


def test_describe_reports_inputs_outputs_and_parameters(fp32_model):
    info = describe_onnx(fp32_model, {})
    assert info.format == "onnx"
    assert info.inputs == (TensorSpec("image", (None, 3, 16, 16), "float32"),)
    assert info.outputs == (TensorSpec("logits", (None, 100), "float32"),)
    expected = sum(p.numel() for p in tiny_cnn().parameters())
    # The exporter folds BatchNorm into the convolutions: weights and biases stay, BN's four vectors go.
    assert info.parameters == expected - 2 * 32 * 2
    assert any(note.startswith("opset ") for note in info.notes)


# --- external data ---------------------------------------------------------------------------------------

def model_with_external_weight(folder: Path, location: str) -> Path:
    weight = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        tensor.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [weight],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [tensor])
    path = folder / "model.onnx"
    # Written as bytes: onnx.save would try to write the external tensor itself.
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../outside.bin"])
def test_refuses_external_data_outside_model_folder(tmp_path, location):
    path = model_with_external_weight(tmp_path, location)
    assert detect_onnx(path) == {"precision": "fp32", "graph": "raw"}  # detection reads no external data
    with pytest.raises(UnsupportedModelError, match="outside the model's folder"):
        describe_onnx(path, {})
    with pytest.raises(UnsupportedModelError, match="outside the model's folder"):
        load_model(path)
    with pytest.raises(UnsupportedModelError):
        run_onnxslim(context(path, tmp_path / "work"))


def test_reads_external_data_next_to_model(tmp_path):
    path = model_with_external_weight(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    model = load_model(path)
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), [0, 1, 2, 3])
    result = run_samples(path, [{"x": np.ones(4, np.float32)}], threads=1)
    np.testing.assert_array_equal(result[0][0], [1, 2, 3, 4])


# --- clean-up steps --------------------------------------------------------------------------------------

def test_onnxslim_keeps_outputs_and_drops_nodes(fp32_model, tmp_path, samples):
    ctx = context(fp32_model, tmp_path / "work")
    before = folder_listing(fp32_model.parent)
    output = run_onnxslim(ctx)
    assert output.parent == ctx.workdir
    assert np.abs(outputs(output, samples) - outputs(fp32_model, samples)).max() < 1e-4
    assert ctx.notes["nodes_after"] <= ctx.notes["nodes_before"]
    assert folder_listing(fp32_model.parent) == before


def opset6_broadcast_add(folder: Path) -> Path:
    """Add with opset 6's broadcast/axis attributes (bias along axis 1), a form ONNX Runtime no longer runs."""
    import onnx

    bias = numpy_helper.from_array(np.array([[1.0], [-2.0], [3.0]], dtype=np.float32), "bias")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"], broadcast=1, axis=1)], "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [3, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])], initializer=[bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
    path = folder / "old.onnx"
    onnx.save(model, str(path))
    return path


def test_onnxslim_moves_an_old_opset_to_a_current_one(tmp_path):
    source = opset6_broadcast_add(tmp_path)
    ctx = context(source, tmp_path / "work")
    output = run_onnxslim(ctx)
    assert ctx.notes["opset_upgraded_from"] == 6 and ctx.notes["opset"] >= 7
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    (result,) = run_samples(output, [{"x": x}], threads=1)[0]
    np.testing.assert_allclose(result, x + np.array([1.0, -2.0, 3.0], dtype=np.float32)[None, :, None])


def test_an_old_per_channel_prelu_keeps_its_channel_axis_in_a_current_opset(tmp_path):
    import onnx

    slope = np.array([0.1, 0.5, 2.0], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("PRelu", ["x", "slope"], ["y"])], "old_prelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("slope", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
        initializer=[numpy_helper.from_array(slope, "slope")])
    source = tmp_path / "prelu6.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3), str(source))
    output = run_onnxslim(context(source, tmp_path / "work"))
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    (result,) = run_samples(output, [{"x": x}], threads=1)[0]
    np.testing.assert_allclose(result, np.where(x > 0, x, x * slope[None, :, None]), rtol=1e-6)


def test_reference_backend_feeds_only_inputs_without_initializers(tmp_path):
    from hub_onnx.reference import run_samples as run_reference

    source = opset6_broadcast_add(tmp_path)  # IR 3: its initializer "bias" is listed among the graph inputs
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    for sample in ({"x": x}, {"unnamed": x}):
        (result,) = run_reference(source, [sample], threads=1)[0]
        np.testing.assert_allclose(result, x + np.array([1.0, -2.0, 3.0], dtype=np.float32)[None, :, None])


def test_float64_model_is_narrowed_to_float32_everywhere(tmp_path):
    import onnx

    from hub_onnx.narrowing import computes_in_float64, float64_as_float32

    scale = numpy_helper.from_array(np.array([0.5, 2.0, -1.0], dtype=np.float64), "scale")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["x64"], to=TensorProto.DOUBLE),
         helper.make_node("Mul", ["x64", "scale"], ["y"])], "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 3])], initializer=[scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert computes_in_float64(model)
    assert set(float64_as_float32(model)) >= {"y", "scale"}
    assert not computes_in_float64(model)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "narrowed.onnx"
    onnx.save(model, str(path))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (result,) = run_samples(path, [{"x": x}], threads=1)[0]
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, x * np.array([0.5, 2.0, -1.0], dtype=np.float32))


def test_quant_preprocess_keeps_outputs_and_leaves_only_its_output(fp32_model, tmp_path, samples):
    ctx = context(fp32_model, tmp_path / "work")
    before = folder_listing(fp32_model.parent)
    output = run_quant_preprocess(ctx)
    assert np.abs(outputs(output, samples) - outputs(fp32_model, samples)).max() < 1e-4
    assert [p.name for p in ctx.workdir.iterdir()] == [output.name]
    assert folder_listing(fp32_model.parent) == before
    assert ctx.notes["symbolic_shape_inference"] is True


def test_quant_preprocess_skips_symbolic_shapes_when_they_fail(fp32_model, tmp_path, samples, monkeypatch):
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    def fail(*args, **kwargs):
        raise Exception("Incomplete symbolic shape inference")

    monkeypatch.setattr(SymbolicShapeInference, "infer_shapes", staticmethod(fail))
    ctx = context(fp32_model, tmp_path / "work")
    output = run_quant_preprocess(ctx)
    assert ctx.notes["symbolic_shape_inference"] is False
    assert ctx.notes["symbolic_shape_error"] == "Exception: Incomplete symbolic shape inference"
    assert np.abs(outputs(output, samples) - outputs(fp32_model, samples)).max() < 1e-4


# --- precision steps -------------------------------------------------------------------------------------

def test_static_int8_stays_close_and_shrinks(optimized_model, calibration, samples, tmp_path):
    ctx = context(optimized_model, tmp_path / "work", calibration)
    before = folder_listing(optimized_model.parent)
    output = run_static_int8(ctx)
    assert folder_listing(optimized_model.parent) == before
    cosine = mean_cosine(outputs(output, samples), outputs(optimized_model, samples))
    print(f"static int8 cosine {cosine:.5f}, {optimized_model.stat().st_size} -> {output.stat().st_size} bytes")
    assert cosine > 0.98
    assert output.stat().st_size < 0.6 * optimized_model.stat().st_size
    assert detect_onnx(output)["precision"] == "int8"
    assert ctx.notes["calibration_samples"] == CALIBRATION_SAMPLES
    assert ctx.notes["per_channel"] is True and ctx.notes["activation_type"] == "uint8"
    assert ctx.notes["quantized_op_types"]["DequantizeLinear"] > 0
    json.dumps(ctx.notes)


def test_static_int8_of_an_opset_11_model_is_moved_to_opset_13_first(calibration, samples, tmp_path):
    """Per-channel DequantizeLinear takes `axis` from opset 13 on: without the upgrade ONNX Runtime refuses the
    quantized file ("Unrecognized attribute: axis")."""
    import shutil

    import torch

    source = tmp_path / "cnn11.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(tiny_cnn(), torch.zeros(1, *INPUT_SHAPE), str(source), dynamo=False, opset_version=11,
                          input_names=["image"], output_names=["logits"])
    private = tmp_path / "copy" / "cnn11.onnx"
    private.parent.mkdir()
    shutil.copy(source, private)
    ctx = context(private, tmp_path / "work", calibration)
    output = run_static_int8(ctx)
    assert ctx.notes["opset_upgraded"] == "11 -> 13"
    assert mean_cosine(outputs(output, samples), outputs(source, samples)) > 0.98


def test_static_int8_of_a_bias_shared_under_a_colliding_name_loads(calibration, samples, tmp_path):
    """Two Convs share bias "b" and a tensor is named "b0" (tf2onnx's names collide so): the quantizer names its
    copy of "b" "b0" too, and ONNX Runtime refused the file. Each Conv now gets its own bias first."""
    import onnx

    rng = np.random.default_rng(0)
    weight = lambda name, shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
    nodes = [helper.make_node("Conv", ["image", "w1", "b"], ["b0"], pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["b0"], ["r"], perm=[0, 1, 3, 2]),
             helper.make_node("Conv", ["r", "w2", "b"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["logits"])]
    graph = helper.make_graph(
        nodes, "shared", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, *INPUT_SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 8])],
        initializer=[weight("w1", (8, 3, 3, 3)), weight("w2", (8, 8, 3, 3)), weight("b", (8,))])
    source = tmp_path / "shared.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    private = tmp_path / "copy" / "shared.onnx"
    private.parent.mkdir()
    private.write_bytes(source.read_bytes())
    ctx = context(private, tmp_path / "work", calibration)

    output = run_static_int8(ctx)

    assert ctx.notes["biases_unshared"] == 1
    assert mean_cosine(outputs(output, samples), outputs(source, samples)) > 0.98


def test_static_int8_keeps_a_relu_that_a_subgraph_reads(calibration, samples, tmp_path):
    """Conv -> Relu, whose output only an If's branch reads (Silero VAD's LSTM branch read its encoder so): ONNX
    Runtime's quantizer drops the Relu and rewires the main graph only, and the branch read negative values."""
    import onnx

    rng = np.random.default_rng(0)
    branch = lambda name: helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["relu"], ["pooled_" + name]),
         helper.make_node("Flatten", ["pooled_" + name], ["out_" + name])], name, [],
        [helper.make_tensor_value_info("out_" + name, TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("If", ["always"], ["logits"], then_branch=branch("then"), else_branch=branch("else"))]
    graph = helper.make_graph(
        nodes, "branch_reads_relu", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, *INPUT_SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 8])],
        initializer=[numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
                     numpy_helper.from_array(np.array(True), "always")])
    source = tmp_path / "branch.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    private = tmp_path / "copy" / "branch.onnx"
    private.parent.mkdir()
    private.write_bytes(source.read_bytes())

    output = run_static_int8(context(private, tmp_path / "work", calibration))

    assert "Relu" in {node.op_type for node in load_model(output).graph.node}
    assert mean_cosine(outputs(output, samples), outputs(source, samples)) > 0.99


def test_sensitivity_ranks_the_node_whose_quantization_loses_most_first(optimized_model, calibration, samples,
                                                                         tmp_path):
    from hub_onnx.sensitivity import rank_nodes

    plain = run_static_int8(context(optimized_model, tmp_path / "plain", calibration))
    ranking = rank_nodes(optimized_model, plain, samples[:8])
    assert len(ranking) == 4 and ranking == sorted(ranking, key=lambda item: -item[1])
    ctx = context(optimized_model, tmp_path / "kept", calibration, exclude_sensitive=1)
    kept = run_static_int8(ctx)
    assert ctx.notes["kept_float"] == [ranking[0][0]]
    assert list(ctx.notes["sensitivity"]) == [name for name, _ in ranking]
    exact = outputs(optimized_model, samples)
    assert mean_cosine(outputs(kept, samples), exact) >= mean_cosine(outputs(plain, samples), exact) - 1e-4


def test_widen_sensitive_gives_the_worst_nodes_outputs_16_bit_activations(optimized_model, calibration, samples,
                                                                         tmp_path):
    import onnx
    from onnx import numpy_helper

    from hub_onnx.sensitivity import rank_node_outputs

    plain = run_static_int8(context(optimized_model, tmp_path / "plain", calibration))
    (node, _, tensor), *_ = rank_node_outputs(optimized_model, plain, samples[:8])
    ctx = context(optimized_model, tmp_path / "wide", calibration, widen_sensitive=1)
    widened = run_static_int8(ctx)
    assert ctx.notes["widened_to_16_bit"] == [tensor] and "kept_float" not in ctx.notes
    model = onnx.load(str(widened))
    zero_points = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    types = {n.input[0]: zero_points[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert types[tensor] == np.uint16 and list(types.values()).count(np.uint16) < len(types)
    exact = outputs(optimized_model, samples)
    assert mean_cosine(outputs(widened, samples), exact) >= mean_cosine(outputs(plain, samples), exact) - 1e-4


def log_spectrogram_model(path: Path) -> Path:
    """A spectrogram front end (a filter bank's real and imaginary parts, squared and summed, a Log of it) and a
    convolution after it: the quiet bins of a power spectrum span decades that linear quantization flattens."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    weight = lambda name, shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
    nodes = [helper.make_node("Conv", ["image", "real_bank"], ["real"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["image", "imaginary_bank"], ["imaginary"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["real", "real"], ["real_power"]),
             helper.make_node("Mul", ["imaginary", "imaginary"], ["imaginary_power"]),
             helper.make_node("Add", ["real_power", "imaginary_power"], ["power"]),
             helper.make_node("Add", ["power", "epsilon"], ["floored"]),
             helper.make_node("Log", ["floored"], ["log_power"]),
             helper.make_node("Conv", ["log_power", "head"], ["features"]),
             helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["logits"])]
    for index, node in enumerate(nodes):
        node.name = f"{node.op_type.lower()}_{index}"
    graph = helper.make_graph(
        nodes, "spectrogram", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, *INPUT_SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 8])],
        initializer=[weight("real_bank", (8, 3, 3, 3)), weight("imaginary_bank", (8, 3, 3, 3)),
                     weight("head", (8, 8, 1, 1)), numpy_helper.from_array(np.array(1e-6, np.float32), "epsilon")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_float_before_log_keeps_a_spectrogram_front_end_float_and_declines_a_model_without_a_log(
        optimized_model, calibration, samples, tmp_path):
    source = log_spectrogram_model(tmp_path / "spectrogram.onnx")
    plain = run_static_int8(context(source, tmp_path / "plain", calibration))
    ctx = context(source, tmp_path / "kept", calibration, float_before_log=True)
    kept = run_static_int8(ctx)
    assert sorted(ctx.notes["kept_float"]) == ["add_4", "add_5", "conv_0", "conv_1", "mul_2", "mul_3"]
    exact = outputs(source, samples)
    assert mean_cosine(outputs(kept, samples), exact) > max(0.999, mean_cosine(outputs(plain, samples), exact))
    with pytest.raises(StepDeclinedError, match="no Log"):
        run_static_int8(context(optimized_model, tmp_path / "none", calibration, float_before_log=True))


def test_static_int8_without_calibration_uses_random_inputs_and_warns(optimized_model, samples, tmp_path):
    ctx = context(optimized_model, tmp_path / "work", random_calibration_samples=4)
    output = run_static_int8(ctx)
    assert "no calibration data" in ctx.notes["warning"]
    assert ctx.notes["calibration_samples"] == 4
    assert mean_cosine(outputs(output, samples), outputs(optimized_model, samples)) > 0.9


def test_calibration_file_must_name_every_input_of_a_multi_input_model(tmp_path):
    path = tmp_path / "calibration.npz"
    np.savez(path, a=np.zeros((3, 2), np.float64), c=np.zeros((3, 2)))
    inputs = (TensorSpec("a", (None, 2)), TensorSpec("b", (None, 2), "int64"))
    ctx = StepContext(input_path=path, workdir=path.parent, options={}, inputs=inputs, calibration=path)
    with pytest.raises(UsageError, match="no array for input.* b; it holds a, c"):
        ctx.calibration_feeds()
    np.savez(path, a=np.ones((3, 2)), b=np.ones((3, 2)))
    feeds = ctx.calibration_feeds()
    assert len(feeds) == 3 and feeds[0]["a"].shape == (1, 2) and feeds[0]["b"].dtype == np.int64


def test_dynamic_int8_quantizes_weights(optimized_model, samples, tmp_path):
    ctx = context(optimized_model, tmp_path / "work")
    output = run_dynamic_int8(ctx)
    cosine = mean_cosine(outputs(output, samples), outputs(optimized_model, samples))
    print(f"dynamic int8 cosine {cosine:.5f}, {optimized_model.stat().st_size} -> {output.stat().st_size} bytes")
    assert cosine > 0.95
    assert detect_onnx(output)["precision"] == "int8-dynamic"
    assert output.stat().st_size < 0.6 * optimized_model.stat().st_size


def test_fp16_keeps_float32_io_and_outputs(optimized_model, samples, tmp_path):
    ctx = context(optimized_model, tmp_path / "work")
    output = run_fp16(ctx)
    cosine = mean_cosine(outputs(output, samples), outputs(optimized_model, samples))
    print(f"fp16 cosine {cosine:.7f}")
    assert cosine > 0.999
    assert detect_onnx(output)["precision"] == "fp16"
    assert describe_onnx(output).inputs[0].dtype == "float32"
    assert ctx.notes["converter"] == "onnxconverter-common"


def test_fp16_falls_back_to_onnxruntime_converter(optimized_model, samples, tmp_path, monkeypatch):
    import hub_onnx.half

    def broken(model, blocked):
        raise ValueError("Cast type mismatch")

    monkeypatch.setattr(hub_onnx.half, "_with_onnxconverter_common", broken)
    ctx = context(optimized_model, tmp_path / "work")
    output = run_fp16(ctx)
    assert ctx.notes["converter"] == "onnxruntime.transformers"
    assert "Cast type mismatch" in ctx.notes["fallback_because"][0]
    assert mean_cosine(outputs(output, samples), outputs(optimized_model, samples)) > 0.999


# --- backend ---------------------------------------------------------------------------------------------

def test_backend_casts_feeds_and_times_inference(optimized_model, samples):
    as_float64 = [{"image": s["image"].astype(np.float64)} for s in samples[:2]]
    results = run_samples(optimized_model, as_float64, threads=1)
    assert len(results) == 2 and results[0][0].shape == (1, 100)
    np.testing.assert_allclose(results[1][0], outputs(optimized_model, samples[1:2]), atol=1e-6)
    milliseconds = median_latency_ms(optimized_model, samples[0], threads=1, repeats=5)
    assert 0 < milliseconds < 1000


# --- declarations ----------------------------------------------------------------------------------------

def test_plugins_import_no_framework_when_declaring():
    code = (
        "import sys, json, hub_onnx, hub_onnxruntime\n"
        "declared = hub_onnx.hub_formats() + hub_onnx.hub_compressors() + hub_onnxruntime.hub_backends()\n"
        "print(json.dumps([[d.name for d in declared], sorted(m for m in ('onnx', 'onnxruntime', 'torch') "
        "if m in sys.modules)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, imported = json.loads(result.stdout)
    assert imported == []
    assert {"onnx", "onnxslim", "ort-quant-preprocess", "ort-quantize-static", "ort-quantize-dynamic", "onnx-fp16",
            "onnx-int4-weights", "onnx-magnitude-prune", "onnx-weight-clip", "onnxruntime"} == set(names)


def test_planner_routes_raw_export_to_int8_through_onnxslim():
    from hub.planner import plan_routes
    from hub.plugins import load_catalog

    catalog = load_catalog()
    assert {r.name: r.error for r in catalog.plugins if r.name in ("onnx", "onnxruntime")} == {
        "onnx": None, "onnxruntime": None}
    routes = plan_routes(catalog, ModelState("onnx"), catalog.targets["cpu-int8"], 10_000_000, count=2)
    assert [r.names for r in routes] == [["onnxslim", "ort-quantize-static"],
                                         ["ort-quant-preprocess", "ort-quantize-static"]]


def test_nncf_quantizes_to_int8_close_to_the_float_model(optimized_model, calibration, samples, tmp_path):
    from hub_nncf.quantize import run_nncf_int8

    ctx = StepContext(input_path=optimized_model, workdir=tmp_path, options={}, calibration=calibration,
                      inputs=(TensorSpec("image", (1, *INPUT_SHAPE)),))
    output = run_nncf_int8(ctx)
    assert detect_onnx(output)["precision"] == "int8"
    assert mean_cosine(outputs(output, samples), outputs(optimized_model, samples)) > 0.98
    assert ctx.notes["calibration_samples"] == CALIBRATION_SAMPLES and ctx.notes["fast_bias_correction"] is True


def test_nncf_is_an_alternative_route_to_cpu_int8(optimized_model):
    import hub

    routes = hub.plan(optimized_model, to="cpu-int8", alternatives=3).routes
    assert routes[0].names[-1] == "ort-quantize-static"
    assert any(route.names[-1] == "nncf-quantize" for route in routes[1:])
