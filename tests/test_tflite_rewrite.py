"""TFLite files with what converters and quantizers cannot read: sparse weights behind DENSIFY (TensorFlow's
EXPERIMENTAL_SPARSITY writes them, as MediaPipe's detectors ship), and MediaPipe's custom transposed convolution
Convolution2DTransposeBias. hub_litert.rewrite turns both into dense constants and builtin operators; the
rewritten file must compute what the original computes on the real interpreter, and such sources must reach ONNX
and full-integer TFLite. The same holds for the operators ai-edge-quantizer skips, which
hub_ai_edge_quantizer.equivalents rewrites into ones it quantizes.
"""
from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import hub
from hub_litert.interpreter import float_operators, io_dtypes, open_interpreter, output_names, run_samples
from hub_litert.rewrite import TRANSPOSE_CONV_BIAS, builtin_copy, needs_rewrite

SHAPE = (16, 16, 8)


def operator_counts(path: Path) -> Counter:
    return Counter(op["op_name"] for op in open_interpreter(path, delegates=False)._get_ops_details())


def outputs(path: Path, images: np.ndarray) -> np.ndarray:
    interpreter = open_interpreter(path)
    (detail,), results = interpreter.get_input_details(), []
    for image in images:
        interpreter.set_tensor(detail["index"], image[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    return np.concatenate(results)


def keras_model(transposed: bool):
    """Convolutions with 80% of their weights zeroed (so that sparsity pays), or one ending in a stride-2
    transposed convolution with a bias."""
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input(SHAPE, name="image")
    x = keras.layers.Conv2D(32, 1, activation="relu")(image)
    if transposed:
        x = keras.layers.Conv2DTranspose(4, 2, strides=2, padding="same", bias_initializer="random_normal")(x)
    else:
        x = keras.layers.Conv2D(16, 3, padding="same")(x)
    model = keras.Model(image, x)
    rng = np.random.default_rng(0)
    for layer in model.layers[1:]:
        weights, bias = layer.get_weights()
        if not transposed:
            weights[rng.random(weights.shape) < 0.8] = 0.0
        layer.set_weights([weights, bias])
    return model


def tflite_bytes(model, sparse: bool, float16: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    if float16:
        converter.optimizations.append(tf.lite.Optimize.DEFAULT)
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def as_mediapipe_transpose_conv(source: Path, target: Path) -> Path:
    """The model with its TRANSPOSE_CONV (output shape, weights, input, bias) written as MediaPipe writes it: the
    custom operator Convolution2DTransposeBias (input, weights, bias), padding and strides packed as
    TfLiteTransposeConvParams."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(source))
    code = schema.OperatorCodeT()  # as files older than `builtin_code` write it: the code in the deprecated field
    code.builtinCode, code.deprecatedBuiltinCode = 0, schema.BuiltinOperator.CUSTOM
    code.customCode = TRANSPOSE_CONV_BIAS
    model.operatorCodes.append(code)
    for op in model.subgraphs[0].operators:
        if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.TRANSPOSE_CONV:
            options = op.builtinOptions
            packed_padding = 1 if options.padding == schema.Padding.SAME else 2
            op.opcodeIndex = len(model.operatorCodes) - 1
            op.inputs = [op.inputs[2], op.inputs[1], op.inputs[3]]
            op.builtinOptionsType, op.builtinOptions = 0, None
            op.customOptions = list(struct.pack("<3i", packed_padding, options.strideW, options.strideH))
    flatbuffer_utils.write_model(model, str(target))
    return target


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"calibration": rng.uniform(0, 1, (24, *SHAPE)).astype(np.float32),
            "heldout": rng.uniform(0, 1, (8, *SHAPE)).astype(np.float32)}


@pytest.fixture(scope="module")
def files(tmp_path_factory, images) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rewrite")
    sparse, transposed = keras_model(transposed=False), keras_model(transposed=True)
    written = {"sparse": tflite_bytes(sparse, True, False), "sparse16": tflite_bytes(sparse, True, True),
               "transposed": tflite_bytes(transposed, False, False),
               "transposed16": tflite_bytes(transposed, False, True)}
    for name, data in written.items():
        (folder / f"{name}.tflite").write_bytes(data)
    paths = {name: folder / f"{name}.tflite" for name in written}
    paths["custom"] = as_mediapipe_transpose_conv(paths["transposed"], folder / "custom.tflite")
    paths["custom16"] = as_mediapipe_transpose_conv(paths["transposed16"], folder / "custom16.tflite")
    np.savez(folder / "calibration.npz", image=images["calibration"])
    paths["calibration"] = folder / "calibration.npz"
    return paths


@pytest.mark.parametrize("name", ["sparse", "sparse16"])
def test_sparse_weights_become_the_dense_constants_the_interpreter_computes(files, images, tmp_path, name):
    assert operator_counts(files[name])["DENSIFY"] == 2 and needs_rewrite(files[name])
    rewritten = tmp_path / "builtin.tflite"
    assert builtin_copy(files[name], rewritten) == {"sparse_constants_densified": 2,
                                                    "transpose_conv_bias_replaced": 0}
    assert "DENSIFY" not in operator_counts(rewritten)
    np.testing.assert_array_equal(outputs(rewritten, images["heldout"]), outputs(files[name], images["heldout"]))


def test_mediapipe_transposed_convolution_becomes_builtin_and_computes_the_same(files, images, tmp_path):
    """The reference is the interpreter running the custom operator itself (XNNPACK implements it)."""
    assert operator_counts(files["custom"])["Convolution2DTransposeBias"] == 1 and needs_rewrite(files["custom"])
    assert not needs_rewrite(files["transposed"])
    rewritten = tmp_path / "builtin.tflite"
    assert builtin_copy(files["custom"], rewritten)["transpose_conv_bias_replaced"] == 1
    counts = operator_counts(rewritten)
    assert counts["TRANSPOSE_CONV"] == 1 and counts["ADD"] == 1 and "Convolution2DTransposeBias" not in counts
    expected = outputs(files["custom"], images["heldout"])
    assert expected.shape == (8, 32, 32, 4) and np.abs(expected).max() > 0.1
    np.testing.assert_allclose(outputs(rewritten, images["heldout"]), expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sparse16", "custom"])
def test_such_sources_reach_onnx_and_full_integer_tflite(files, tmp_path, name):
    onnx = hub.convert(files[name], to="onnxruntime-cpu", calibration=files["calibration"], output=tmp_path / "o")
    assert onnx.report.route[0] == "tflite-tf2onnx"
    notes = onnx.report.steps[0].notes
    assert notes["sparse_constants_densified" if name == "sparse16" else "transpose_conv_bias_replaced"] >= 1
    assert onnx.report.final.fidelity.max_abs < 1e-4
    int8 = hub.convert(files[name], to="tflite-arm", calibration=files["calibration"], output=tmp_path / "i")
    assert int8.report.route[-1] == "ai-edge-quantizer-int8" and "tflite-tf2onnx" not in int8.report.route
    assert io_dtypes(int8.path) == (["int8"], ["int8"]) and float_operators(int8.path) == []
    assert int8.report.final.fidelity.cosine > 0.98


@pytest.mark.parametrize("name", ["sparse16", "custom16"])
def test_a_float16_tflite_reaches_the_tflite_target_by_widening_its_weights(files, images, tmp_path, name):
    """No round trip through ONNX: one lossless step, channels-last inputs unchanged."""
    assert hub.plan(files[name], to="tflite").routes[0].names == ["tflite-widen-fp16"]
    result = hub.convert(files[name], to="tflite", calibration=files["calibration"], output=tmp_path / "fp32")
    assert result.report.route == ["tflite-widen-fp16"] and result.report.final.fidelity.max_abs < 1e-5
    counts = operator_counts(result.path)
    assert not {"DEQUANTIZE", "DENSIFY", "Convolution2DTransposeBias"} & set(counts)
    np.testing.assert_allclose(outputs(result.path, images["heldout"]), outputs(files[name], images["heldout"]),
                               atol=1e-5)


def test_an_output_that_a_float_operator_also_reads_is_given_as_int8(tmp_path, images):
    """ai-edge-quantizer ends such an output (Basic Pitch's pitch contour also feeds a float operator) with a
    DEQUANTIZE to float32; the step gives the graph the int8 tensor itself, and keeps the DEQUANTIZE for the
    operator that reads it (LOG: the library has no int8 rule for it, and it has no exact equivalent)."""
    import keras

    from hub.declarations import StepContext
    from hub.states import TensorSpec
    from hub_ai_edge_quantizer.quantize import quantize_tflite_int8

    keras.utils.set_random_seed(1)
    image = keras.Input(SHAPE, name="image")
    contour = keras.layers.Conv2D(4, 3, padding="same", activation="sigmoid", name="contour")(image)
    logged = keras.layers.Lambda(keras.ops.log, name="logged")(contour)
    source = tmp_path / "heads.tflite"
    source.write_bytes(tflite_bytes(keras.Model(image, [contour, logged]), False, False))
    np.savez(tmp_path / "calibration.npz", image=images["calibration"])
    (tmp_path / "work").mkdir()
    ctx = StepContext(input_path=source, workdir=tmp_path / "work", options={"full_integer": False},
                      inputs=(TensorSpec("image", (None, *SHAPE), "float32"),), calibration=tmp_path / "calibration.npz")
    quantized = quantize_tflite_int8(ctx)
    assert len(ctx.notes["outputs_read_before_dequantize"]) == 1
    assert "int8" in io_dtypes(quantized)[1]
    assert operator_counts(quantized)["DEQUANTIZE"] >= 1
    feeds = [{"image": image[None]} for image in images["heldout"]]
    got, expected = (dict(zip(output_names(path), zip(*run_samples(path, feeds, 1)))) for path in (quantized, source))
    assert set(got) == set(expected)
    for name in got:
        a, b = np.stack(got[name]).ravel(), np.stack(expected[name]).ravel()
        assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99, name


def signal_heads(signal):
    """A Conv1D (EXPAND_DIMS, CONV_2D, RESHAPE), then NEG, SQUARE and REDUCE_MAX."""
    import tensorflow as tf

    weights = tf.constant(np.random.default_rng(2).normal(0, 0.5, (3, 4, 8)), tf.float32)
    features = tf.nn.conv1d(signal, weights, 1, "SAME")
    return {"negated": -features, "peak": tf.reduce_max(tf.square(features), axis=1, keepdims=True)}


def upsampled(image):
    """DEPTH_TO_SPACE, then clamps: a standalone RELU6 (made RELU_0_TO_1: no TensorFlow operator converts to it)
    and MINIMUM."""
    import tensorflow as tf

    weights = tf.constant(np.random.default_rng(3).normal(0, 0.3, (1, 1, 16, 16)), tf.float32)
    upsampled = tf.nn.depth_to_space(tf.nn.conv2d(image, weights, 1, "SAME"), 2)
    return {"upsampled": upsampled, "gate": tf.nn.relu6(upsampled), "clipped": tf.clip_by_value(upsampled, -0.5, 0.5)}


def token_scores(tokens):
    import tensorflow as tf

    weights = tf.constant(np.random.default_rng(4).normal(0, 1, (10, 4)), tf.float32)
    return {"scores": tf.reduce_mean(tf.matmul(tf.one_hot(tokens, 10), weights), axis=1)}


def normalized(features):
    """A layer normalization by the reciprocal of a square root, as onnx2tf writes ONNX's Reciprocal (DIV of one
    by SQRT: the converter fuses a plain division into RSQRT itself), of rows whose variances span hundreds (for
    int16 activations, whose ADDs need general scales)."""
    import tensorflow as tf

    rows = features * (0.5 + features[:, :, :1] * features[:, :, :1])
    centered = rows - tf.reduce_mean(rows, axis=-1, keepdims=True)
    deviation = tf.sqrt(tf.reduce_mean(centered * centered, axis=-1, keepdims=True) + 1e-6)
    # a saturated tanh + 1: int16 scales within 0.1% of powers of two (2^-15 in, 2^-14 out), which select the
    # refused kernel
    return {"normalized": centered * tf.math.reciprocal(deviation) + (tf.tanh(100.0 * features) + 1.0)}


# case: (function, input shape, input type, operators the library does not quantize, step options). The token
# model's held-out means exceed the range the library's moving average keeps (logit cosine 0.966): min-max.
QUANTIZER_CASES = {
    "signal": (signal_heads, (1, 64, 4), "float32", {"EXPAND_DIMS", "NEG", "SQUARE", "REDUCE_MAX"}, None),
    "image": (upsampled, (1, 8, 8, 16), "float32", {"DEPTH_TO_SPACE", "RELU_0_TO_1", "MINIMUM"}, None),
    "tokens": (token_scores, (1, 16), "int32", {"ONE_HOT"}, {"ranges": "min-max"}),
    "norm": (normalized, (1, 8, 32), "float32", {"DIV", "SQRT"}, {"recipe": "static_wi8_ai16"}),
}


def concrete_tflite(function, shape: tuple[int, ...], dtype: str, path: Path) -> Path:
    import tensorflow as tf

    # a dynamic batch, as Keras saves models: the converter then writes EXPAND_DIMS, not RESHAPE, for a Conv1D
    concrete = tf.function(function).get_concrete_function(tf.TensorSpec((None, *shape[1:]), dtype, name="x"))
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([concrete]).convert())
    return with_first_relu6_as_relu_0_to_1(path)


def with_first_relu6_as_relu_0_to_1(path: Path) -> Path:
    """The file with its first RELU6 made RELU_0_TO_1 (onnx2tf's hard sigmoids come out so), in place."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from hub_litert.rewrite import builtin_of, opcode_index

    model = flatbuffer_utils.read_model(str(path))
    relu6 = [op for op in model.subgraphs[0].operators if builtin_of(model, op) == schema.BuiltinOperator.RELU6]
    if relu6:
        relu6[0].opcodeIndex = opcode_index(model, schema.BuiltinOperator.RELU_0_TO_1)
        flatbuffer_utils.write_model(model, str(path))
    return path


@pytest.mark.parametrize("case", sorted(QUANTIZER_CASES))
def test_operators_the_quantizer_skips_become_exact_equivalents_and_the_model_fully_integer(tmp_path, case):
    """Each rewrite computes what the operator computed (float, on the real interpreter), and the quantized model
    then has no float operator left and keeps its answers."""
    from hub.declarations import StepContext
    from hub.states import TensorSpec
    from hub_ai_edge_quantizer.quantize import prepare_for_quantizer, quantize_tflite_int8

    function, shape, dtype, skipped, step_options = QUANTIZER_CASES[case]
    source = concrete_tflite(function, shape, dtype, tmp_path / f"{case}.tflite")
    assert skipped <= set(operator_counts(source))
    rng = np.random.default_rng(5)
    values = (rng.integers(0, 10, (40, *shape[1:])) if dtype == "int32" else
              rng.normal(0, 1, (40, *shape[1:]))).astype(dtype)
    feeds = [{"x": value[None]} for value in values[32:]]
    prepared = tmp_path / "prepared.tflite"
    prepare_for_quantizer(source, prepared, feeds[0])
    assert not skipped & set(operator_counts(prepared))
    expected = dict(zip(output_names(source), zip(*run_samples(source, feeds, 1))))
    rewritten = dict(zip(output_names(prepared), zip(*run_samples(prepared, feeds, 1))))
    for name in expected:
        np.testing.assert_allclose(np.stack(rewritten[name]), np.stack(expected[name]), rtol=1e-5, atol=1e-5)
    np.savez(tmp_path / "calibration.npz", x=values[:32])
    (tmp_path / "work").mkdir()
    options = {"full_integer": True, **(step_options or {})}
    ctx = StepContext(input_path=source, workdir=tmp_path / "work", options=options,
                      inputs=(TensorSpec("x", (None, *shape[1:]), dtype),), calibration=tmp_path / "calibration.npz")
    quantized = quantize_tflite_int8(ctx)
    rewritten_kinds = set(ctx.notes["operators_rewritten_as_quantizable"])
    assert rewritten_kinds and rewritten_kinds <= skipped
    assert float_operators(quantized) == []
    got = dict(zip(output_names(quantized), zip(*run_samples(quantized, feeds, 1))))
    for name in expected:
        a, b = np.stack(got[name]).ravel(), np.stack(expected[name]).ravel()
        assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99, name


def test_calibration_keyed_by_the_source_input_name_reaches_a_renamed_input(tmp_path):
    """onnx2tf renames TensorFlow's "serving_default_input_2:0" to "input_2__0": the samples, keyed by the
    source's name, still calibrate the input (by name, else by position)."""
    from hub.declarations import StepContext
    from hub.states import TensorSpec
    from hub_ai_edge_quantizer.quantize import quantize_tflite_int8

    source = concrete_tflite(upsampled, (1, 8, 8, 16), "float32", tmp_path / "renamed.tflite")
    values = np.random.default_rng(6).normal(0, 1, (16, 8, 8, 16)).astype(np.float32)
    np.savez(tmp_path / "calibration.npz", **{"serving_default_x:0": values})
    (tmp_path / "work").mkdir()
    ctx = StepContext(input_path=source, workdir=tmp_path / "work", options={},
                      inputs=(TensorSpec("serving_default_x:0", (None, 8, 8, 16), "float32"),),
                      calibration=tmp_path / "calibration.npz")
    quantized = quantize_tflite_int8(ctx)
    assert ctx.notes["calibration_samples"] == 16 and float_operators(quantized) == []
