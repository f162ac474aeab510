"""MindIR as a first-class format (issue 5).

Pure Python (no MindSpore): every operator on the issue's list goes ONNX -> MindIR -> ONNX through our two
translators and computes what it computed (ONNX Runtime on both ends); unsupported operators are all listed.
With MindSpore (the hub-managed "mindspore" environment, created once per session into $HUB_ENVIRONMENTS_DIR
when set, else a session folder: about 800 MB from the package index): MindSpore runs the MindIR we write for
each operator and for a real pretrained CNN (EfficientNet-Lite0) and matches ONNX Runtime within 1e-4, and
networks MindSpore exported itself go to cpu-int8 and tflite-arm, verified at every step."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import hub
from hub.errors import MissingDependencyError, UnsupportedModelError
from hub.worker import load_outputs, save_samples
from hub_mindspore import from_onnx, to_onnx, wire
from onnx_op_models import OP_MODELS

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent / "benchmarks"))


def ort_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})


def through_mindir(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX -> MindIR bytes -> parsed again -> ONNX: both translators and the wire description."""
    written = from_onnx.convert(model).SerializeToString()
    parsed = wire.ModelProto()
    parsed.ParseFromString(written)
    return to_onnx.convert(parsed)


# ---- pure Python ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OP_MODELS))
def test_each_operator_survives_onnx_to_mindir_and_back(name):
    model, feeds = OP_MODELS[name]()
    expected = ort_outputs(model, feeds)
    returned = ort_outputs(through_mindir(model), feeds)
    assert len(returned) == len(expected)
    for got, want in zip(returned, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_dynamic_batch_is_fixed_to_the_given_input_shape():
    model, feeds = OP_MODELS["conv_asymmetric"]()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    written = from_onnx.convert(model, {"x": (1, 3, 9, 9)})

    assert list(written.graph.input[0].tensor[0].dims) == [1, 3, 9, 9]
    with pytest.raises(UnsupportedModelError, match="no fixed shape"):
        from_onnx.convert(model)


def test_mindir_we_write_looks_like_mindspores_own():
    model, _ = OP_MODELS["conv_asymmetric"]()
    mindir = from_onnx.convert(model)
    primitives = {p.op_type: p for p in mindir.primitives}
    conv = {a.name: a for a in primitives["Conv2D"].attribute}

    assert (mindir.producer_name, mindir.mind_ir_version) == ("MindSpore", 3)
    assert all(node.op_type == "Constant" or node.op_type.startswith("REF::") for node in mindir.graph.node)
    assert [v.ints[0] for v in conv["pad_list"].values] == [0, 1, 0, 1]  # top, bottom, left, right
    assert [v.ints[0] for v in conv["stride"].values] == [1, 1, 2, 2]
    assert "BiasAdd" in primitives  # the bias apart from the convolution, as MindSpore writes it


def test_unsupported_onnx_operators_are_all_listed():
    from onnx import TensorProto, helper

    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"]), helper.make_node("NonZero", ["v"], ["n"]),
             helper.make_node("Relu", ["x"], ["r"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("n", TensorProto.INT64, None)],
                              [onnx.numpy_helper.from_array(np.asarray([2], dtype=np.int64), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    with pytest.raises(UnsupportedModelError, match="cannot convert to MindIR: NonZero, TopK$"):
        from_onnx.convert(model)


def test_unsupported_mindir_primitives_are_all_listed():
    model, _ = OP_MODELS["relu"]()
    mindir = from_onnx.convert(model)
    mindir.primitives.add(name="Unique:9", op_type="Unique")
    mindir.primitives.add(name="TopK:10", op_type="TopK")
    for name in ("Unique:9", "TopK:10"):
        mindir.graph.node.add(op_type=f"REF::{name}", name=name, input=["main_graph:x"], output=[name])

    with pytest.raises(UnsupportedModelError, match="cannot convert to ONNX: TopK, Unique$"):
        to_onnx.convert(mindir)


def test_a_corrupt_or_foreign_mindir_is_refused_clearly(tmp_path):
    from hub_mindspore.model_io import detect, read_model

    truncated = tmp_path / "net.mindir"
    model, _ = OP_MODELS["conv_asymmetric"]()
    truncated.write_bytes(from_onnx.convert(model).SerializeToString()[:300])
    text = tmp_path / "notes.mindir"
    text.write_text("not a model at all\n")

    assert detect(truncated) and not detect(text)
    with pytest.raises(UnsupportedModelError, match="not a readable MindIR file"):
        read_model(truncated)


def test_without_the_environment_the_error_says_how_to_create_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_ENVIRONMENTS_DIR", str(tmp_path / "no-environments"))
    model, _ = OP_MODELS["conv_asymmetric"]()
    source = tmp_path / "net.onnx"
    onnx.save(model, str(source))

    with pytest.raises(MissingDependencyError, match="hub env create mindspore"):
        hub.convert(source, to="mindir", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- with MindSpore ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mindspore_environment(tmp_path_factory) -> Path:
    """The hub-managed mindspore environment's interpreter, created through the CLI (once per folder)."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("HUB_ENVIRONMENTS_DIR"):
            patch.setenv("HUB_ENVIRONMENTS_DIR", str(tmp_path_factory.mktemp("environments")))
        started = time.monotonic()
        created = subprocess.run([sys.executable, "-m", "hub.cli", "env", "create", "mindspore"],
                                 capture_output=True, text=True)
        assert created.returncode == 0, created.stderr[-3000:]
        listed = subprocess.run([sys.executable, "-m", "hub.cli", "env", "list"], capture_output=True, text=True)
        assert "environment mindspore: created" in listed.stdout
        print(f"\nmindspore environment ready in {time.monotonic() - started:.1f} s")
        from hub.environments import interpreter

        yield interpreter("mindspore")


def run_in_mindspore(python: Path, folder: Path, models: dict[str, tuple[Path, list[dict]]]) -> dict:
    """Each model's outputs on its samples, computed by MindSpore (one process for all of them)."""
    job = []
    for name, (model, samples) in models.items():
        save_samples(folder / f"{name}.samples.npz", samples)
        job.append({"model": str(model), "samples": str(folder / f"{name}.samples.npz"),
                    "outputs": str(folder / f"{name}.outputs.npz")})
    (folder / "job.json").write_text(json.dumps(job))
    ran = subprocess.run([str(python), str(TESTS / "mindspore_run.py"), str(folder / "job.json")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    return {name: load_outputs(folder / f"{name}.outputs.npz") for name in models}


def test_mindspore_runs_the_mindir_we_write_for_every_operator(mindspore_environment, tmp_path):
    models, expected = {}, {}
    for name, build in OP_MODELS.items():
        model, feeds = build()
        path = tmp_path / f"{name}.mindir"
        path.write_bytes(from_onnx.convert(model).SerializeToString())
        models[name] = (path, [feeds])
        expected[name] = ort_outputs(model, feeds)

    computed = run_in_mindspore(mindspore_environment, tmp_path, models)

    for name in OP_MODELS:
        for got, want in zip(computed[name][0], expected[name], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.fixture(scope="module")
def exported_by_mindspore(mindspore_environment, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mindspore-exports")
    exported = subprocess.run([str(mindspore_environment), str(TESTS / "mindspore_networks.py"), str(folder)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert exported.returncode == 0, exported.stderr[-3000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("network", ["cnn", "mlp", "residual"])
@pytest.mark.parametrize("target", ["cpu-int8", "tflite-arm"])
def test_mindir_exported_by_mindspore_reaches_int8_targets(exported_by_mindspore, network, target, tmp_path):
    result = hub.convert(exported_by_mindspore / f"{network}.mindir", to=target, output=tmp_path / "out")
    steps = [step.name for step in result.report.steps]

    assert steps[0] == "mindir-to-onnx"
    assert result.report.steps[0].fidelity.max_abs < 1e-4  # the translation itself is exact
    assert result.report.final.fidelity.cosine >= 0.98
    assert result.report.final.state.startswith("tflite/int8" if target == "tflite-arm" else "onnx/int8")
    assert result.path.exists()


@pytest.mark.slow
def test_pretrained_cnn_onnx_to_mindir_matches_onnx_runtime(mindspore_environment, tmp_path):
    """EfficientNet-Lite0 (depthwise convolutions, residual blocks, ImageNet weights) ONNX -> MindIR; MindSpore
    runs it on held-out photos and gives ONNX Runtime's logits within 1e-4."""
    import torch

    import pretrained

    model = pretrained.efficientnet_lite0()
    calibration, heldout = pretrained.calibration_and_heldout(calibration_count=8, heldout_count=8)
    source = tmp_path / "efficientnet_lite0.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(calibration[:1]),)), source)
    np.savez(tmp_path / "calib.npz", calibration)
    as_onnx = hub.convert(source, to="onnxruntime-cpu", calibration=tmp_path / "calib.npz",
                          output=tmp_path / "onnx").path

    result = hub.convert(as_onnx, to="mindir", calibration=tmp_path / "calib.npz", output=tmp_path / "mindir")
    samples = [{"input": image[None]} for image in heldout]
    session = ort.InferenceSession(str(as_onnx), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    expected = [session.run(None, {name: image[None]})[0] for image in heldout]
    computed = run_in_mindspore(mindspore_environment, tmp_path, {"lite0": (result.path, samples)})["lite0"]

    assert [s.name for s in result.report.steps] == ["onnx-to-mindir"]
    assert result.report.final.fidelity.max_abs <= 1e-4
    difference = max(float(np.abs(got[0] - want).max()) for got, want in zip(computed, expected, strict=True))
    print(f"\nEfficientNet-Lite0 MindIR (MindSpore) vs ONNX Runtime: max-abs {difference:.2e} over 8 photos")
    assert difference <= 1e-4


def test_the_environment_keeps_its_own_packages(mindspore_environment):
    """The worker interpreter sees its own numpy 1.x and the linked hub packages, none of the hub's own env."""
    probe = subprocess.run([str(mindspore_environment), "-c", (
        "import importlib.util, numpy, hub.worker, hub_mindspore.backend; "
        "print(numpy.__version__, importlib.util.find_spec('torch') is None)")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    numpy_version, without_torch = probe.stdout.split()

    assert numpy_version.startswith("1.") and np.__version__.startswith("2.")
    assert without_torch == "True"
