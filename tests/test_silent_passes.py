"""No silent passes: on every verification path (each reference backend, each artifact backend, a quantizing
step and its ladder, a reference that is the first float artifact, each kind of output), a wrong result is
injected after the artifact ran and before it is compared, and the conversion must refuse it (exit 5, nothing
written). The wrong results are subtle: most keep a whole-tensor cosine that a lax check would accept."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import hub
from hub.states import ModelState
from hub.verification import Verifier
from hub.verify import Outputs

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow

Corruption = Callable[[np.ndarray], np.ndarray]


def swap_top_two_in_every_third_sample(array: np.ndarray) -> np.ndarray:
    """Class scores whose best two classes trade places in a third of the samples."""
    wrong = array.copy()
    flat = wrong.reshape(-1, array.shape[-1])
    for row in flat[::3]:
        first, second = np.argsort(row)[-2:][::-1]
        row[first], row[second] = row[second], row[first]
    return wrong


def invert_the_small_scores(array: np.ndarray) -> np.ndarray:
    """A detector's mixed output with its scores (the small values beside pixel boxes) turned around."""
    wrong = array.copy()
    wrong[..., 4:] = 1.0 - wrong[..., 4:]
    return wrong


def corrupt(monkeypatch, corruption: Corruption, applies: Callable[[Verifier, Path, ModelState], bool]) -> list:
    """Every artifact `applies` picks gives wrong outputs to the comparison; returns the artifacts hit."""
    run_outputs, hit = Verifier.run_outputs, []

    def wrong_outputs(self: Verifier, artifact: Path, state: ModelState) -> Outputs | None:
        outputs = run_outputs(self, artifact, state)
        if outputs is None or not applies(self, artifact, state):
            return outputs
        hit.append(state)
        return Outputs([[corruption(array) for array in sample] for sample in outputs.samples], outputs.names)

    monkeypatch.setattr(Verifier, "run_outputs", wrong_outputs)
    return hit


def not_the_source(verifier: Verifier, artifact: Path, state: ModelState) -> bool:
    return artifact != verifier.source_path


def quantized(verifier: Verifier, artifact: Path, state: ModelState) -> bool:
    return state.precision != "fp32"


def after_the_reference(verifier: Verifier, artifact: Path, state: ModelState) -> bool:
    return verifier.reference is not None and artifact != verifier.reference.path


def refused(model, target: str, output: Path, **options) -> hub.StepFailedError:
    with pytest.raises(hub.StepFailedError) as caught:
        hub.convert(model, to=target, output=output, max_routes=1, **options)
    assert not output.exists()
    return caught.value


@pytest.mark.parametrize("target, applies, reference, artifact_backend", [
    ("onnxruntime-cpu", not_the_source, "torch", "onnxruntime"),
    ("tflite", not_the_source, "torch", "litert"),
    ("cpu-int8", quantized, "torch", "onnxruntime, every ladder rung"),
    ("tflite-arm", quantized, "torch", "litert, int8 I/O"),
])
def test_wrong_class_scores_are_refused_on_every_route(digits_model, tmp_path, monkeypatch, target, applies,
                                                       reference, artifact_backend):
    hit = corrupt(monkeypatch, swap_top_two_in_every_third_sample, applies)
    error = refused(digits_model["model"], target, tmp_path / "out", calibration=digits_model["calibration"])
    assert hit and "top-1 agreement" in error.message


def test_wrong_results_after_a_float_artifact_became_the_reference_are_refused(digits_model, tmp_path,
                                                                              monkeypatch):
    """A state dict runs on no backend: the exported float model is the reference, and what comes after it
    (slimming, here) is checked against it."""
    state_dict = tmp_path / "digits.pth"
    torch.save(digits_model["module"].state_dict(), state_dict)
    hit = corrupt(monkeypatch, swap_top_two_in_every_third_sample, after_the_reference)
    error = refused(state_dict, "onnxruntime-cpu", tmp_path / "out", calibration=digits_model["calibration"],
                    model_factory="digits:DigitsNet", inputs=["image:1,1,8,8"])
    assert hit and "top-1 agreement" in error.message


def test_wrong_results_of_an_onnx_source_on_onnxruntime_are_refused(digits_model, tmp_path, monkeypatch):
    exported = hub.convert(digits_model["model"], to="onnxruntime-cpu", output=tmp_path / "fp32").path
    hit = corrupt(monkeypatch, swap_top_two_in_every_third_sample, not_the_source)
    error = refused(exported, "onnxruntime-fp16", tmp_path / "out", calibration=digits_model["calibration"])
    assert hit and "top-1 agreement" in error.message


def test_wrong_results_of_a_tflite_source_quantized_as_tflite_are_refused(digits_model, tmp_path, monkeypatch):
    source = hub.convert(digits_model["model"], to="tflite", output=tmp_path / "fp32").path
    assert hub.plan(source, to="tflite-arm").routes[0].names == ["ai-edge-quantizer-int8"]
    hit = corrupt(monkeypatch, swap_top_two_in_every_third_sample, quantized)
    error = refused(source, "tflite-arm", tmp_path / "out", calibration=digits_model["calibration"])
    assert hit and "top-1 agreement" in error.message


class MixedDetector(torch.nn.Module):
    """One output per anchor mixing scales, as YOLO-class detectors do: 4 box values in pixels (0-320) beside
    2 class scores (0-1)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Conv2d(8, 6, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        raw = self.head(self.backbone(image)).flatten(2).transpose(1, 2)
        return torch.cat([torch.sigmoid(raw[..., :4]) * 320.0, torch.sigmoid(raw[..., 4:])], dim=-1)


def exported_with_samples(module: torch.nn.Module, name: str, samples: np.ndarray, folder: Path
                          ) -> tuple[Path, np.ndarray]:
    """The module saved with torch.export (a batch of one) beside calibration.npz of the samples (fed as
    `name`); returns the program and the module's outputs on all the samples."""
    np.savez(folder / "calibration.npz", **{name: samples})
    program = folder / "model.pt2"
    torch.export.save(torch.export.export(module.eval(), (torch.from_numpy(samples[:1]),)), program)
    return program, module(torch.from_numpy(samples)).detach().numpy()


def test_a_detector_with_its_scores_broken_is_refused_though_its_boxes_agree(tmp_path, monkeypatch):
    images = np.random.default_rng(0).standard_normal((12, 3, 16, 16)).astype(np.float32)
    program, outputs = exported_with_samples(MixedDetector(), "image", images, tmp_path)
    broken = invert_the_small_scores(outputs)
    whole = float(np.dot(outputs.ravel(), broken.ravel()) / np.linalg.norm(outputs) / np.linalg.norm(broken))
    assert whole > 0.99  # what a whole-tensor cosine alone would have let through

    hit = corrupt(monkeypatch, invert_the_small_scores, not_the_source)
    error = refused(program, "onnxruntime-cpu", tmp_path / "out", calibration=tmp_path / "calibration.npz")
    assert hit and "slice" in error.message


class YesNo(torch.nn.Module):
    """One probability per sample (1, 1), as a voice detector's speech probability."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.score = torch.nn.Linear(16, 1)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.score(signal) * 4.0)


def test_a_probability_answered_the_other_way_in_every_other_sample_is_refused(tmp_path, monkeypatch):
    """A per-sample cosine of one positive value is 1 whatever the value; the answer itself must agree."""
    signals = np.random.default_rng(1).standard_normal((12, 16)).astype(np.float32)
    program, _ = exported_with_samples(YesNo(), "signal", signals, tmp_path)
    calls = iter(range(10**6))

    def flip_every_other(array: np.ndarray) -> np.ndarray:
        return 1.0 - array if next(calls) % 2 == 0 else array

    hit = corrupt(monkeypatch, flip_every_other, not_the_source)
    error = refused(program, "onnxruntime-cpu", tmp_path / "out", calibration=tmp_path / "calibration.npz")
    assert hit and "top-1 agreement" in error.message


class LineReader(torch.nn.Module):
    """A text line in, per column a distribution over a blank and 11 characters out (1, 16, 12), as CTC text
    recognizers give: the blank wins most columns."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.columns = torch.nn.Conv2d(1, 12, (8, 2), stride=(8, 2))
        self.blank = torch.nn.Parameter(torch.tensor([4.0] + [0.0] * 11))

    def forward(self, line: torch.Tensor) -> torch.Tensor:
        logits = self.columns(line).flatten(2).transpose(1, 2) * 3.0 + self.blank
        return torch.softmax(logits, dim=-1)


def misread_every_other_character(array: np.ndarray) -> np.ndarray:
    """A read whose every other non-blank column names the next character of the alphabet instead."""
    wrong = array.copy()
    columns = np.flatnonzero(array[0].argmax(-1) != 0)[::2]
    wrong[0, columns, 1:] = np.roll(array[0, columns, 1:], 1, axis=-1)
    return wrong


def test_a_text_read_with_misread_characters_is_refused_though_the_blanks_agree(tmp_path, monkeypatch):
    lines = np.random.default_rng(1).standard_normal((12, 1, 8, 32)).astype(np.float32)
    program, reads = exported_with_samples(LineReader(), "line", lines, tmp_path)
    assert 0.5 < (reads.argmax(-1) == 0).mean() < 0.95  # blanks win most columns, not all

    hit = corrupt(monkeypatch, misread_every_other_character, not_the_source)
    error = refused(program, "onnxruntime-cpu", tmp_path / "out", calibration=tmp_path / "calibration.npz")
    assert hit and "top-1 agreement" in error.message


def string_model(folder: Path) -> tuple[Path, Path]:
    """ONNX's StringNormalizer (stop words dropped, case kept): strings in, strings out, and a calibration file
    holding unicode strings (an .npz of objects would need pickling, which the hub refuses)."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("StringNormalizer", ["words"], ["kept"], case_change_action="NONE",
                            is_case_sensitive=1, stopwords=["monday"])
    graph = helper.make_graph([node], "strings", [helper.make_tensor_value_info("words", TensorProto.STRING, [4])],
                              [helper.make_tensor_value_info("kept", TensorProto.STRING, [None])])
    path = folder / "strings.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    days = np.array([["monday", "tuesday", "friday", "sunday"], ["monday", "monday", "may", "june"]], dtype=np.str_)
    np.savez(folder / "words.npz", words=days)
    return path, folder / "words.npz"


def misspell_the_last_word(array: np.ndarray) -> np.ndarray:
    wrong = array.astype(np.str_)
    wrong[-1] = wrong[-1][::-1]
    return wrong


def test_string_outputs_must_match_exactly_and_a_changed_one_is_refused(tmp_path, monkeypatch):
    model, words = string_model(tmp_path)
    result = hub.convert(model, to="onnxruntime-cpu", calibration=words, output=tmp_path / "ok", use_cache=False)
    (output,) = result.report.final.fidelity.outputs
    assert output.kind == "exact" and output.exact_agreement == 1.0
    hit = corrupt(monkeypatch, misspell_the_last_word, not_the_source)
    error = refused(model, "onnxruntime-cpu", tmp_path / "out", calibration=words, use_cache=False)
    assert hit and "exact agreement 0.000 < 1" in error.message
