"""The TensorFlow, Keras and TFLite plugins: detection, description, the LiteRT backend, and conversions of small
Keras models (.keras, tf-keras .h5, SavedModel, .tflite) to every TFLite target and, through tf2onnx, to the
ONNX ones. Models are built here (Conv2D, DepthwiseConv2D, BatchNorm, ReLU, Dense) with seeded weights; every
conversion is checked with numbers, against the Keras model on held-out inputs too.
"""
from __future__ import annotations

import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import hub
from hub.errors import StepFailedError, UnsupportedModelError, UsageError
from hub.states import TensorSpec
from hub_litert.flatbuffer import detect_tflite
from hub_litert.interpreter import describe_tflite, float_operators, io_dtypes, open_interpreter, run_samples
from hub_tensorflow.describe import describe_keras, describe_keras_h5
from hub_tensorflow.detect import is_keras_archive, is_keras_h5, is_savedmodel
from hub_tensorflow.models import load_keras_model

SHAPE = (16, 16, 3)
CLASSES = 10
CALIBRATION_SAMPLES = 32


def keras_cnn(keras, seed: int = 0):
    """Conv+BN+ReLU, depthwise Conv+BN+ReLU, pointwise Conv, max-pool, Dense(64), Dense(10): about 140k weights,
    most in the first Dense, so int8 shrinks the file about 4x."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    image = keras.Input(SHAPE, name="image")
    x = layers.Conv2D(16, 3, padding="same")(image)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(32, 1, activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    logits = layers.Dense(CLASSES, name="logits")(x)
    model = keras.Model(image, logits)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):  # non-trivial statistics, so folding them matters
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma, beta, rng.uniform(-0.5, 0.5, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])
    return model


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: image[None]})[0] for image in images])


def tflite_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    return np.concatenate([o[0] for o in run_samples(path, [{"image": i[None]} for i in images], threads=1)])


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"calibration": rng.uniform(0, 1, (CALIBRATION_SAMPLES, *SHAPE)).astype(np.float32),
            "heldout": rng.uniform(0, 1, (16, *SHAPE)).astype(np.float32)}


@pytest.fixture(scope="module")
def models(tmp_path_factory, images) -> dict[str, Path]:
    import keras

    folder = tmp_path_factory.mktemp("tf-models")
    model = keras_cnn(keras)
    model.save(folder / "cnn.keras")
    model.export(str(folder / "cnn_savedmodel"), verbose=False)
    np.savez(folder / "calibration.npz", image=images["calibration"])
    reference = np.asarray(model.predict(images["heldout"], verbose=0))
    return {"keras": folder / "cnn.keras", "savedmodel": folder / "cnn_savedmodel",
            "calibration": folder / "calibration.npz", "reference": reference}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One step cache for the conversions of the same source: the source's latency is measured once."""
    return tmp_path_factory.mktemp("shared-cache")


# --- detection and description (no worker, no TensorFlow in the detector) ----------------------------------

def test_detects_each_format_by_content_and_nothing_else(models, tmp_path):
    assert is_keras_archive(models["keras"]) and not is_keras_h5(models["keras"])
    assert is_savedmodel(models["savedmodel"]) and not is_savedmodel(models["keras"])
    foreign = tmp_path / "model.tflite"
    for content in (b"", b"\x00" * 64, b"1234TFL3" + b"\xff" * 40, bytes(range(256))):
        foreign.write_bytes(content)
        assert detect_tflite(foreign) is None and not is_keras_archive(foreign) and not is_keras_h5(foreign)
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("config.json", "{}")  # no weights and no metadata: not a Keras archive
    assert not is_keras_archive(tmp_path / "other.keras")
    assert detect_tflite(tmp_path) is None and detect_tflite(tmp_path / "missing.tflite") is None


def test_describes_keras_archive_without_loading_it(models):
    info = describe_keras(models["keras"], {})
    assert info.inputs == (TensorSpec("image", (None, *SHAPE), "float32"),)
    # conv 448 + bn 64 + depthwise 160 + bn 64 + pointwise 544 + dense 131136 + dense 650
    assert info.parameters == 448 + 64 + 160 + 64 + 544 + 8 * 8 * 32 * 64 + 64 + 650


# --- conversions of a .keras model to every TFLite target -------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("target, precision, min_cosine", [
    ("tflite", "fp32", 0.9999), ("tflite-fp16", "fp16", 0.999), ("tflite-dynamic", "int8-dynamic", 0.98),
    ("tflite-arm", "int8", 0.98)])
def test_keras_converts_to_each_tflite_target(models, tmp_path, shared_cache, images, target, precision,
                                              min_cosine):
    result = hub.convert(models["keras"], to=target, calibration=models["calibration"], output=tmp_path,
                         cache_dir=shared_cache)
    report = result.report.to_json()
    suffix = {"fp32": "", "fp16": "-fp16", "int8-dynamic": "-dynamic-int8", "int8": "-int8"}[precision]
    assert report["route"] == [f"keras-to-tflite{suffix}"]
    assert report["final"]["state"] == f"tflite/{precision}/raw" and report["final"]["backend"] == "litert"
    assert detect_tflite(result.path)["precision"] == precision  # what the file says agrees with the plan
    assert report["final"]["fidelity"]["cosine"] >= min_cosine
    assert report["final"]["latency_ms"] > 0 and report["final"]["source_latency_ms"] > 0
    heldout = tflite_outputs(result.path, images["heldout"])
    assert mean_cosine(models["reference"], heldout) >= min_cosine
    assert (models["reference"].argmax(1) == heldout.argmax(1)).mean() >= 0.9
    source_parameters = report["source"]["parameters"]
    assert report["final"]["bytes"] <= {"fp32": 4.1, "fp16": 2.2, "int8-dynamic": 1.4, "int8": 1.4}[precision] \
        * source_parameters
    if precision == "fp32":
        assert report["final"]["fidelity"]["max_abs"] < 1e-4
    if precision == "int8":
        assert io_dtypes(result.path) == (["int8"], ["int8"])
        assert float_operators(result.path) == []
        assert report["steps"][0]["notes"]["calibration_samples"] == CALIBRATION_SAMPLES


@pytest.mark.slow
def test_int8_tflite_is_at_most_a_third_of_the_float_one(models, tmp_path, shared_cache):
    sizes = {}
    for target in ("tflite", "tflite-arm", "tflite-dynamic"):
        sizes[target] = hub.convert(models["keras"], to=target, calibration=models["calibration"],
                                    output=tmp_path / target, cache_dir=shared_cache).report.final.bytes
    assert sizes["tflite-arm"] / sizes["tflite"] <= 0.35
    assert sizes["tflite-dynamic"] / sizes["tflite"] <= 0.35


# --- other sources: SavedModel, tf-keras HDF5, TFLite -----------------------------------------------------

@pytest.mark.slow
def test_savedmodel_to_tflite_and_through_tf2onnx_to_onnxruntime(models, tmp_path, images):
    tflite = hub.convert(models["savedmodel"], to="tflite", output=tmp_path / "tflite",
                         calibration=models["calibration"])
    assert tflite.report.route == ["savedmodel-to-tflite"]
    assert tflite.report.final.fidelity.max_abs < 1e-4
    onnx = hub.convert(models["savedmodel"], to="onnxruntime-cpu", output=tmp_path / "onnx",
                       calibration=models["calibration"])
    assert onnx.report.route == ["savedmodel-tf2onnx", "onnxslim"]
    assert onnx.report.final.fidelity.cosine >= 0.9999 and onnx.report.final.fidelity.max_abs < 1e-4
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    heldout = session.run(None, {"image": images["heldout"]})[0]
    assert mean_cosine(models["reference"], heldout) > 0.9999


@pytest.mark.slow
def test_keras_to_cpu_int8_through_tf2onnx(models, tmp_path, images):
    result = hub.convert(models["keras"], to="cpu-int8", calibration=models["calibration"], output=tmp_path)
    assert result.report.route == ["keras-tf2onnx", "onnxslim", "ort-quantize-static"]
    assert result.report.final.fidelity.cosine >= 0.98
    import onnxruntime

    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    heldout = np.concatenate([session.run(None, {"image": i[None]})[0] for i in images["heldout"]])
    assert mean_cosine(models["reference"], heldout) >= 0.98


@pytest.mark.slow
def test_tf_keras_h5_to_tflite_arm(tmp_path, images, models):
    import tf_keras

    model = keras_cnn(tf_keras)
    model.save(tmp_path / "cnn.h5")
    assert is_keras_h5(tmp_path / "cnn.h5") and not is_keras_archive(tmp_path / "cnn.h5")
    info = describe_keras_h5(tmp_path / "cnn.h5", {})
    assert info.inputs == (TensorSpec("image", (None, *SHAPE), "float32"),)
    result = hub.convert(tmp_path / "cnn.h5", to="tflite-arm", calibration=models["calibration"],
                         output=tmp_path / "out")
    assert result.report.route == ["tf-keras-h5-to-savedmodel", "savedmodel-to-tflite-int8"]
    assert result.report.final.fidelity.cosine >= 0.98
    assert io_dtypes(result.path) == (["int8"], ["int8"])
    reference = model.predict(images["heldout"], verbose=0)
    assert mean_cosine(reference, tflite_outputs(result.path, images["heldout"])) >= 0.98


@pytest.mark.slow
def test_float_tflite_source_to_cpu_int8_through_tf2onnx(models, tmp_path, shared_cache):
    fp32 = hub.convert(models["keras"], to="tflite", output=tmp_path / "fp32", calibration=models["calibration"],
                       cache_dir=shared_cache).path
    assert detect_tflite(fp32) == {"precision": "fp32", "graph": "raw"}
    info = describe_tflite(fp32)
    assert [(s.name, s.shape) for s in info.inputs] == [("image", (None, *SHAPE))]
    result = hub.convert(fp32, to="cpu-int8", calibration=models["calibration"], output=tmp_path / "int8")
    assert result.report.route == ["tflite-tf2onnx", "onnxslim", "ort-quantize-static"]
    assert result.report.steps[0].fidelity.max_abs < 1e-4  # tf2onnx itself is exact
    assert result.report.final.fidelity.cosine >= 0.98


@pytest.mark.slow
def test_a_tflite_source_with_float16_weights_reaches_onnx(models, tmp_path, shared_cache, images):
    """Its float16 weights are widened to float32 on the way (lossless): the ONNX result matches the source."""
    fp16 = hub.convert(models["keras"], to="tflite-fp16", output=tmp_path / "fp16", cache_dir=shared_cache).path
    assert detect_tflite(fp16)["precision"] == "fp16"
    assert hub.plan(fp16, to="onnxruntime-cpu").routes[0].names[0] == "tflite-tf2onnx"
    result = hub.convert(fp16, to="onnxruntime-cpu", calibration=models["calibration"], output=tmp_path / "onnx")
    assert result.report.final.state == "onnx/fp32/optimized"
    assert result.report.steps[0].fidelity.max_abs < 1e-4
    assert mean_cosine(tflite_outputs(fp16, images["heldout"]), run_onnx(result.path, images["heldout"])) > 0.9999


def as_an_old_flatbuffer(source: Path, target: Path) -> Path:
    """The model as files written before TFLite's extended operator codes (MediaPipe's): the code only in
    deprecated_builtin_code, 0 (ADD) in builtin_code, and no signature."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(source))
    for code in model.operatorCodes:
        code.deprecatedBuiltinCode, code.builtinCode = code.builtinCode, 0
    model.signatureDefs = []
    flatbuffer_utils.write_model(model, str(target))
    return target


@pytest.mark.slow
def test_an_old_float16_tflite_file_reaches_tflite_arm_through_ai_edge_quantizer(models, tmp_path, shared_cache,
                                                                                 images):
    """A TFLite source quantizes as TFLite (its float16 weights widened first), without a round trip through
    ONNX."""
    fp16 = hub.convert(models["keras"], to="tflite-fp16", output=tmp_path / "fp16", cache_dir=shared_cache).path
    fp32 = hub.convert(models["keras"], to="tflite", output=tmp_path / "fp32", cache_dir=shared_cache).path
    old = as_an_old_flatbuffer(fp16, tmp_path / "old.tflite")
    result = hub.convert(old, to="tflite-arm", calibration=models["calibration"], output=tmp_path / "int8")
    assert result.report.route == ["tflite-widen-fp16", "ai-edge-quantizer-int8"]
    assert result.report.steps[0].notes["float16_constants_widened"] >= 5
    notes = result.report.steps[1].notes
    assert notes["operator_codes_renamed"] >= 5
    assert notes["signature_added"] and notes["calibration_samples"] == CALIBRATION_SAMPLES
    # the dynamic batch becomes the samples' one, and Flatten's SHAPE a constant: else it stayed float
    assert len(notes["inputs_made_static"]) == 1 and notes["shape_operators_folded"] == 1
    assert io_dtypes(result.path) == (["int8"], ["int8"]) and float_operators(result.path) == []
    assert result.report.final.bytes <= 0.35 * fp32.stat().st_size
    assert [s.name for s in describe_tflite(result.path).outputs] == [s.name for s in describe_tflite(old).outputs]
    # held-out images, against the float model
    assert mean_cosine(tflite_outputs(fp32, images["heldout"]), tflite_outputs(result.path, images["heldout"])) > 0.98


@pytest.mark.slow
def test_ai_edge_quantizers_16_bit_rung_keeps_int8_inputs_and_outputs(models, tmp_path, shared_cache, images):
    """static_wi8_ai16 computes with int16 activations; the int8 edges of the plain recipe are requantized to
    and from them inside the model, so the tflite-arm contract (int8 I/O, integer operators) still holds."""
    fp32 = hub.convert(models["keras"], to="tflite", output=tmp_path / "fp32", cache_dir=shared_cache).path
    result = hub.convert(fp32, to="tflite-arm", calibration=models["calibration"], output=tmp_path / "int16",
                         step_options={"ai-edge-quantizer-int8": {"recipe": "static_wi8_ai16"}})
    assert result.report.route == ["ai-edge-quantizer-int8"]
    notes = result.report.steps[0].notes
    assert notes["recipe"] == "static_wi8_ai16" and len(notes["io_requantized_from_int16"]) == 2
    assert io_dtypes(result.path) == (["int8"], ["int8"]) and float_operators(result.path) == []
    interpreter = open_interpreter(result.path, delegates=False)
    assert "int16" in {np.dtype(detail["dtype"]).name for detail in interpreter.get_tensor_details()}
    assert [s.name for s in describe_tflite(result.path).outputs] == [s.name for s in describe_tflite(fp32).outputs]
    assert mean_cosine(tflite_outputs(fp32, images["heldout"]), tflite_outputs(result.path, images["heldout"])) > 0.98


# --- full integer or a list of what stayed float ----------------------------------------------------------

@pytest.mark.slow
def test_tflite_arm_names_the_operators_that_stay_float(tmp_path, models):
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input(SHAPE, name="image")
    x = keras.layers.Conv2D(8, 3)(image)
    x = keras.layers.LayerNormalization()(x)  # the converter leaves a float NEG in it, silently
    model = keras.Model(image, keras.layers.Dense(CLASSES)(keras.layers.Flatten()(x)))
    model.save(tmp_path / "layernorm.keras")
    with pytest.raises(StepFailedError) as failure:
        hub.convert(tmp_path / "layernorm.keras", to="tflite-arm", calibration=models["calibration"],
                    output=tmp_path / "out", max_routes=1)
    assert "cannot be made fully integer" in failure.value.message and "NEG" in failure.value.message
    assert not (tmp_path / "out").exists()


# --- code in model files: custom classes and Lambda layers ------------------------------------------------

CUSTOM_LAYERS = textwrap.dedent("""
    import keras


    class Scale(keras.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, inputs):
            return inputs * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}
""")


@pytest.fixture()
def custom_layer_model(tmp_path, monkeypatch) -> Path:
    import keras

    (tmp_path / "my_layers.py").write_text(CUSTOM_LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{__import__('os').environ.get('PYTHONPATH', '')}")
    import my_layers

    image = keras.Input((8,), name="features")
    model = keras.Model(image, keras.layers.Dense(4)(my_layers.Scale(3.0)(image)))
    model.save(tmp_path / "custom.keras")
    return tmp_path / "custom.keras"


def test_custom_class_needs_custom_objects(custom_layer_model):
    with pytest.raises(UsageError, match="--custom-objects MODULE"):
        load_keras_model(custom_layer_model, {})
    for reference in ("my_layers", "my_layers:Scale"):
        model = load_keras_model(custom_layer_model, {"custom_objects": reference})
        assert type(model.layers[1]).__name__ == "Scale" and model.layers[1].factor == 3.0
    with pytest.raises(UsageError, match="no 'Missing'"):
        load_keras_model(custom_layer_model, {"custom_objects": "my_layers:Missing"})


@pytest.mark.slow
def test_custom_objects_option_converts_and_its_absence_says_what_to_pass(custom_layer_model, tmp_path,
                                                                          monkeypatch):
    with pytest.raises(UsageError, match="--custom-objects"):
        hub.convert(custom_layer_model, to="tflite", output=tmp_path / "refused", max_routes=1)
    assert not (tmp_path / "refused").exists()
    result = hub.convert(custom_layer_model, to="tflite", output=tmp_path / "out", custom_objects=["my_layers"])
    assert result.report.final.fidelity.max_abs < 1e-5


@pytest.mark.slow
def test_lambda_layer_is_refused_unless_trusted(tmp_path, monkeypatch):
    import keras

    image = keras.Input((8,), name="features")
    model = keras.Model(image, keras.layers.Dense(4)(keras.layers.Lambda(lambda t: t * 2.0)(image)))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(UnsupportedModelError, match="--trust-code"):
        load_keras_model(tmp_path / "lambda.keras", {})
    with pytest.raises(UnsupportedModelError, match="--trust-code"):
        hub.convert(tmp_path / "lambda.keras", to="tflite", output=tmp_path / "refused", max_routes=1)
    result = hub.convert(tmp_path / "lambda.keras", to="tflite", output=tmp_path / "out", trust_code=True)
    assert result.report.final.fidelity.max_abs < 1e-5
