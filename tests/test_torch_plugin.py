"""The PyTorch plugin on tiny models: detection, describe, every converter, the backend, in-memory models."""
from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

sys.path.insert(0, str(Path(__file__).parent))

from fixtures_models import TinyConvNet, TwoInputNet, make_tiny_conv_net  # noqa: E402

from hub.declarations import StepContext  # noqa: E402
from hub.errors import UnsupportedModelError, UsageError  # noqa: E402
from hub.states import TensorSpec  # noqa: E402
from hub_torch import backend, describe, detect, export, hub_converters, memory  # noqa: E402

# The tests build TorchScript files themselves; torch 2.13 marks every torch.jit call deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

IMAGE_SPEC = TensorSpec("image", (1, 3, 8, 8))
MAX_ABS = 1e-4


def onnx_outputs(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def context(tmp_path: Path, input_path: Path, inputs=(), **options) -> StepContext:
    workdir = tmp_path / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    return StepContext(input_path=input_path, workdir=workdir, options=dict(options), inputs=tuple(inputs))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def conv_net() -> TinyConvNet:
    return make_tiny_conv_net().eval()


@pytest.fixture(scope="module")
def conv_program(tmp_path_factory, conv_net, image) -> Path:
    path = tmp_path_factory.mktemp("program") / "tiny.pt2"
    memory.save_module(conv_net, (image,), path)
    return path


@pytest.fixture(scope="module")
def two_input_program(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("program") / "two.pt2"
    memory.save_module(TwoInputNet(), (torch.rand(1, 4), torch.ones(1, 3)), path)
    return path


def two_input_feed() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"features": rng.standard_normal((1, 4)).astype(np.float32), "mask": np.ones((1, 3), np.float32)}


def expected_conv(conv_net: TinyConvNet, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return conv_net(torch.from_numpy(image)).numpy()


def max_abs(left: np.ndarray, right: np.ndarray) -> float:
    return float(np.max(np.abs(left - right)))


def test_importing_plugin_declarations_does_not_import_torch():
    code = (
        "import hub_torch, sys; hub_torch.hub_formats(); hub_torch.hub_converters(); hub_torch.hub_backends(); "
        "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_declared_steps_reference_existing_functions():
    for step in hub_converters():
        module_name, function_name = step.run.split(":")
        assert callable(getattr(importlib.import_module(module_name), function_name)), step.name


def test_detects_each_format_by_content_not_extension(tmp_path, conv_net, conv_program, image):
    # Misleading extensions on purpose: detection must read the content.
    torchscript = tmp_path / "script.pt2"
    torch.jit.save(torch.jit.trace(conv_net, torch.from_numpy(image)), str(torchscript))
    pickled_module = tmp_path / "module.onnx"
    torch.save(conv_net, pickled_module)
    state_dict = tmp_path / "weights.pt"
    torch.save(conv_net.state_dict(), state_dict)
    legacy_pickle = tmp_path / "legacy.bin"
    torch.save(conv_net.state_dict(), legacy_pickle, _use_new_zipfile_serialization=False)

    found = {
        path.name: (detect.is_torch_export(path), detect.is_torchscript(path), detect.is_torch_pickle(path))
        for path in (conv_program, torchscript, pickled_module, state_dict, legacy_pickle)
    }
    assert found == {
        "tiny.pt2": (True, False, False),
        "script.pt2": (False, True, False),
        "module.onnx": (False, False, True),
        "weights.pt": (False, False, True),
        "legacy.bin": (False, False, True),
    }


def test_detectors_reject_foreign_and_corrupt_files_without_raising(tmp_path, conv_program):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    text = tmp_path / "notes.pt2"
    text.write_text("not a model\n")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 4)
    other_pickle = tmp_path / "other.pkl"
    other_pickle.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    plain_zip = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("folder/readme.txt", "hello")
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(conv_program.read_bytes()[: conv_program.stat().st_size // 2])
    directory = tmp_path / "a_directory.pt2"
    directory.mkdir()
    missing = tmp_path / "missing.pt2"

    for path in (empty, text, garbage, other_pickle, plain_zip, truncated, directory, missing):
        for detector in (detect.is_torch_export, detect.is_torchscript, detect.is_torch_pickle):
            assert not detector(path), (detector.__name__, path.name)


def test_describes_torch_export_inputs_outputs_and_parameters(two_input_program):
    info = describe.describe_torch_export(two_input_program, {})
    assert info.format == "torch-export"
    assert info.inputs == (TensorSpec("features", (1, 4), "float32"), TensorSpec("mask", (1, 3), "float32"))
    assert [output.shape for output in info.outputs] == [(1, 3), (1,)]
    assert info.parameters == 4 * 3 + 3


def test_describes_traced_torchscript_from_its_stored_inputs(tmp_path, conv_net, image):
    path = tmp_path / "script.pt"
    torch.jit.save(torch.jit.trace(conv_net, torch.from_numpy(image)), str(path))
    info = describe.describe_torchscript(path, {})
    assert info.inputs == (TensorSpec("image", (1, 3, 8, 8), "float32"),)
    assert info.outputs == (TensorSpec("output_0", (1, 5), "float32"),)
    assert info.parameters == sum(p.numel() for p in conv_net.parameters())


def test_describes_scripted_torchscript_from_options_or_names_only(tmp_path, conv_net):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(conv_net), str(path))
    names_only = describe.describe_torchscript(path, {})
    assert [spec.name for spec in names_only.inputs] == ["image"]
    assert names_only.notes and "--input" in names_only.notes[0]
    given = describe.describe_torchscript(path, {"inputs": [IMAGE_SPEC.to_json()]})
    assert given.inputs == (IMAGE_SPEC,)
    assert given.outputs[0].shape == (1, 5)


def test_dynamo_export_matches_torch_with_program_input_names(tmp_path, conv_net, conv_program, image):
    ctx = context(tmp_path, conv_program, opset=18)
    onnx_path = export.export_program_to_onnx(ctx)
    assert onnx_path.parent == ctx.workdir and not list(ctx.workdir.glob("*.data"))
    import onnx

    model = onnx.load(str(onnx_path))
    assert [value.name for value in model.graph.input] == ["image"]
    assert {entry.domain: entry.version for entry in model.opset_import}[""] == 18
    assert ctx.notes["opset"] == 18
    (actual,) = onnx_outputs(onnx_path, {"image": image})
    assert max_abs(actual, expected_conv(conv_net, image)) < MAX_ABS


def test_dynamic_dimensions_are_described_as_none_and_survive_dynamo_export(tmp_path, conv_net, image):
    batch = torch.export.Dim("batch", min=1, max=64)
    # A batch of 1 would specialize the dimension to a constant: trace with 2.
    example = torch.from_numpy(np.concatenate([image, image]))
    program = torch.export.export(conv_net, (example,), dynamic_shapes=({0: batch},))
    path = tmp_path / "dynamic.pt2"
    torch.export.save(program, str(path))
    assert describe.describe_torch_export(path, {}).inputs == (TensorSpec("image", (None, 3, 8, 8)),)

    onnx_path = export.export_program_to_onnx(context(tmp_path, path, opset=18))
    batch_of_three = np.concatenate([image, image * 2, image * 3])
    (actual,) = onnx_outputs(onnx_path, {"image": batch_of_three})
    assert max_abs(actual, expected_conv(conv_net, batch_of_three)) < MAX_ABS


def test_trace_then_legacy_export_matches_torch_on_nested_outputs(tmp_path, two_input_program):
    specs = describe.describe_torch_export(two_input_program, {}).inputs
    torchscript = export.trace_program_to_torchscript(context(tmp_path / "a", two_input_program, specs))
    assert detect.is_torchscript(torchscript)
    onnx_path = export.export_torchscript_to_onnx(context(tmp_path / "b", torchscript, specs, opset=17))

    import onnx

    assert {entry.domain: entry.version for entry in onnx.load(str(onnx_path)).opset_import}[""] == 17
    feed = two_input_feed()
    actual = onnx_outputs(onnx_path, feed)
    program = torch.export.load(str(two_input_program))
    expected = program.module()(*(torch.from_numpy(feed[name]) for name in ("features", "mask")))
    assert len(actual) == 2
    assert max_abs(actual[0], expected["scores"].detach().numpy()) < MAX_ABS
    assert max_abs(actual[1], expected["extras"][0].detach().numpy()) < MAX_ABS


def test_legacy_export_without_known_shapes_asks_for_input_flag(tmp_path, conv_net):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(conv_net), str(path))
    with pytest.raises(UsageError, match="--input"):
        export.export_torchscript_to_onnx(context(tmp_path, path))


def test_pickle_is_refused_without_trust(tmp_path, conv_net):
    path = tmp_path / "module.pt"
    torch.save(conv_net, path)
    with pytest.raises(UnsupportedModelError, match="--trust-pickle"):
        describe.describe_torch_pickle(path, {})
    with pytest.raises(UnsupportedModelError, match="--trust-pickle"):
        export.export_pickle_to_program(context(tmp_path, path, [IMAGE_SPEC]))


def test_trusted_pickled_module_exports_and_runs_on_backend(tmp_path, conv_net, image):
    path = tmp_path / "module.pt"
    torch.save(conv_net, path)
    assert describe.describe_torch_pickle(path, {"trust_pickle": True}).parameters == 5 * 144 + 5 + 4 * 27 + 4
    ctx = context(tmp_path, path, [IMAGE_SPEC], trust_pickle=True)
    program = export.export_pickle_to_program(ctx)
    assert detect.is_torch_export(program) and ctx.notes["loaded_as"] == "module"
    (outputs,) = backend.run(program, [{"image": image}], threads=1)
    assert max_abs(outputs[0], expected_conv(conv_net, image)) < MAX_ABS


def test_state_dict_needs_a_factory_and_exports_with_one(tmp_path, image):
    path = tmp_path / "weights.pth"
    torch.save(make_tiny_conv_net().state_dict(), path)
    with pytest.raises(UsageError, match="model_factory"):
        export.export_pickle_to_program(context(tmp_path, path, [IMAGE_SPEC], trust_pickle=True))

    ctx = context(tmp_path, path, [IMAGE_SPEC], trust_pickle=True, model_factory="fixtures_models:make_tiny_conv_net")
    program = export.export_pickle_to_program(ctx)
    assert ctx.notes["loaded_as"] == "state_dict"
    (outputs,) = backend.run(program, [{"image": image}], threads=1)
    assert max_abs(outputs[0], expected_conv(make_tiny_conv_net().eval(), image)) < MAX_ABS


def test_pickle_export_without_input_shapes_asks_for_input_flag(tmp_path, conv_net):
    path = tmp_path / "module.pt"
    torch.save(conv_net, path)
    with pytest.raises(UsageError, match="--input"):
        export.export_pickle_to_program(context(tmp_path, path, trust_pickle=True))


def test_backend_runs_program_and_torchscript_per_sample(tmp_path, two_input_program):
    specs = describe.describe_torch_export(two_input_program, {}).inputs
    torchscript = export.trace_program_to_torchscript(context(tmp_path, two_input_program, specs))
    samples = [two_input_feed(), {name: value * 2 for name, value in two_input_feed().items()}]

    from_program = backend.run(two_input_program, samples, threads=1)
    from_script = backend.run(torchscript, samples, threads=1)
    assert [len(outputs) for outputs in from_program] == [2, 2]
    for program_outputs, script_outputs in zip(from_program, from_script, strict=True):
        for left, right in zip(program_outputs, script_outputs, strict=True):
            assert max_abs(left, right) < MAX_ABS
    assert max_abs(from_program[1][1], samples[1]["features"].sum(axis=1)) < MAX_ABS


def test_backend_latency_is_a_positive_median(conv_program, image):
    milliseconds = backend.latency(conv_program, {"image": image}, threads=1, repeats=5)
    assert 0 < milliseconds < 1000


def test_save_module_returns_forward_argument_names(tmp_path):
    example = (np.ones((1, 4), np.float32), np.ones((1, 3), np.float32))
    names = memory.save_module(TwoInputNet(), example, tmp_path / "m.pt2")
    assert names == ["features", "mask"]


def test_a_checkpoint_nesting_its_weights_under_any_one_key_gives_them_up():
    torch = pytest.importorskip("torch")
    from hub_torch.describe import find_state_dict

    weights = {"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2)}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.1}]}
    assert find_state_dict({"model_state": weights, "optimizer_state": optimizer, "step": 7}) is weights
    assert find_state_dict({"state_dict": weights}) is weights and find_state_dict(weights) is weights
    assert find_state_dict({"model": weights, "ema": dict(weights)}) is None  # two candidates: no guess
    assert find_state_dict({"optimizer_state": optimizer}) is None
