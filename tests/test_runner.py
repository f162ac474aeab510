"""The fallback loop on its own (no worker process starts), and where verification takes its reference from."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hub
from hub.declarations import Step
from hub.errors import FidelityError, StepDeclinedError, StepFailedError, UsageError
from hub.planner import PlannedStep, Route
from hub.runner import SilentProgress, first_working
from hub.states import ModelState, Requirement

ONNX, TFLITE, INT8 = ModelState("onnx"), ModelState("tflite"), ModelState("tflite", precision="int8")


def _route(*names: str, start: ModelState = ONNX, result: ModelState = TFLITE) -> Route:
    steps = tuple(PlannedStep(Step(name, Requirement.of(), {}, "x:y"), "test", "converter", start, result, 1.0, 1.0)
                  for name in names)
    return Route(steps, float(len(names)))


def _runner(failing: dict[str, Exception]):
    ran: list[list[str]] = []

    def run_route(route: Route):
        ran.append(route.names)
        for name in route.names:
            if name in failing:
                error = failing[name]
                error.failed_step = name
                raise error
        return Path("/result"), []
    return run_route, ran


def test_the_first_route_that_works_wins_after_failures_are_recorded():
    run_route, ran = _runner({"broken": StepFailedError("the exporter broke")})
    routes = [_route("broken", "quantize"), _route("broken", "other"), _route("export", "quantize")]
    route, artifact, _, failures = first_working(routes, 3, run_route, SilentProgress(), "cpu-int8")
    assert route.names == ["export", "quantize"] and artifact == Path("/result")
    assert ran == [["broken", "quantize"], ["export", "quantize"]]  # the second repeats the failed step
    assert [(f.route, f.step, f.reason) for f in failures] == [(["broken", "quantize"], "broken", "the exporter broke")]


def test_all_routes_failing_raise_one_error_naming_each_and_a_user_error_first():
    run_route, ran = _runner({"a": StepFailedError("crashed"), "b": UsageError("give --model-factory")})
    with pytest.raises(UsageError) as caught:
        first_working([_route("a"), _route("b"), _route("c")], 2, run_route, SilentProgress(), "tflite")
    assert ran == [["a"], ["b"]]  # at most `attempts` routes
    assert caught.value.message.splitlines() == ["give --model-factory (all 2 route(s) tried to tflite failed)",
                                                 "  a: a: crashed", "  b: b: give --model-factory"]


def test_a_route_a_step_declined_at_once_does_not_count_against_the_routes_tried():
    run_route, ran = _runner({"nhwc": StepDeclinedError("inputs are channels-last already"),
                              "a": StepFailedError("crashed")})
    routes = [_route("nhwc"), _route("a"), _route("nchw")]
    route, _, _, failures = first_working(routes, 2, run_route, SilentProgress(), "tflite")
    assert route.names == ["nchw"] and ran == [["nhwc"], ["a"], ["nchw"]]
    assert [f.step for f in failures] == ["nhwc", "a"]


def test_after_a_step_drifts_routes_without_it_are_tried_first():
    """A clean-up before the same quantizer drifts again; another quantizer is worth the next attempt."""
    run_route, ran = _runner({"quantize": FidelityError("output drifted")})
    # the clean-up gives the quantizer another input state: the route is not skipped, only deferred
    routes = [_route("quantize", result=INT8), _route("clean", "quantize", start=TFLITE, result=INT8),
              _route("other-quantizer", result=INT8), _route("more", result=INT8)]
    route, _, _, _ = first_working(routes, 3, run_route, SilentProgress(), "cpu-int8")
    assert route.names == ["other-quantizer"] and ran == [["quantize"], ["other-quantizer"]]
    run_route, ran = _runner({"quantize": FidelityError("output drifted"), "other-quantizer": StepFailedError("x"),
                              "more": StepFailedError("y")})
    with pytest.raises(StepFailedError):
        first_working(routes, 4, run_route, SilentProgress(), "cpu-int8")
    assert ran == [["quantize"], ["other-quantizer"], ["more"], ["clean", "quantize"]]


def test_a_float_converter_that_drifted_is_tried_again_after_a_clean_up_in_cost_order():
    """A clean-up changes what a converter is given (onnx2tf and an opset-6 Pad that onnxslim rewrites)."""
    run_route, ran = _runner({"convert": FidelityError("output drifted")})
    routes = [_route("convert"), _route("clean", "convert", start=TFLITE), _route("other-converter")]
    route, _, _, _ = first_working(routes, 3, run_route, SilentProgress(), "tflite")
    assert ran == [["convert"], ["clean", "convert"], ["other-converter"]] and route.names == ["other-converter"]


def test_a_long_library_message_is_one_line_per_route():
    noisy = "InvalidArgument: Got invalid dimensions for input\n index: 1 Got: 1 Expected: 8\n" + "[0.1 0.2]\n" * 200
    run_route, _ = _runner({"a": StepFailedError(noisy)})
    with pytest.raises(StepFailedError) as caught:
        first_working([_route("a")], 3, run_route, SilentProgress(), "cpu-int8")
    assert caught.value.message.splitlines() == ["all 1 route(s) tried to cpu-int8 failed:",
                                                 "  a: a: InvalidArgument: Got invalid dimensions for input"]
    assert "Expected: 8" in caught.value.detail


def test_no_route_tried_is_an_error():
    run_route, _ = _runner({})
    with pytest.raises(StepFailedError, match="no route to tflite could be tried"):
        first_working([], 3, run_route, SilentProgress(), "tflite")


@pytest.mark.slow
def test_a_source_no_backend_runs_is_verified_against_a_float_artifact_never_itself(digits_model, tmp_path):
    """A state dict runs on no backend: the first float artifact a backend runs becomes the reference (and is
    not scored), and every later step is measured against it: exact zeros would mean a self-comparison."""
    import torch

    state_dict = tmp_path / "digits.pth"
    torch.save(digits_model["module"].state_dict(), state_dict)
    result = hub.convert(state_dict, to="onnxruntime-cpu", calibration=digits_model["calibration"],
                         output=tmp_path / "out", model_factory="digits:DigitsNet", inputs=["image:1,1,8,8"])
    report = result.report
    assert any("no installed backend runs torch-pickle" in w for w in report.warnings)
    first, *later = report.steps
    assert first.name == "torch-pickle-export" and first.fidelity is None
    assert later and all(step.fidelity is not None and step.fidelity.max_abs > 0 for step in later)
    assert report.final.fidelity.cosine > 0.9999 and report.final.fidelity.top1_agreement == 1.0


def test_a_compressed_first_artifact_cannot_become_the_reference(tmp_path):
    from hub.cache import StepCache
    from hub.plugins import load_catalog
    from hub.verification import Verifier, Workspace
    from hub.verify import Outputs

    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    verifier = Verifier(Workspace(tmp_path, load_catalog(), 60, None), source, ModelState("torch-pickle"),
                        "onnxruntime", [{"x": np.zeros((1, 2), np.float32)}], 1, {}, StepCache(tmp_path / "c"))
    int8 = Outputs([[np.zeros((1, 2))]])
    with pytest.raises(FidelityError, match="no float reference can be run"):
        verifier._adopt(source, ModelState("onnx", precision="int8"), int8, "quantize")
    verifier._adopt(source, ModelState("onnx"), int8, "export")
    assert verifier.reference is not None and not verifier.reference.is_source


def test_a_ladder_rung_may_not_grow_the_file_past_twice_what_its_step_promises_nor_past_its_plain_result(tmp_path):
    from hub.report import StepRecord
    from hub.runner import _oversized

    source = tmp_path / "model.onnx"
    source.write_bytes(b"x" * 1000)
    quantize = PlannedStep(Step("quantize", Requirement.of(), {}, "x:y", size_ratio=0.27), "test", "compressor",
                           ONNX, ONNX, 1.0, 1.0)

    def record(size: int) -> StepRecord:
        return StepRecord("quantize", "test", "compressor", "onnx", 1.0, size, None)

    assert _oversized(quantize, source, record(500), plain_bytes=270) == []
    assert _oversized(quantize, source, record(1020), plain_bytes=270) == [
        "size 1.02x its input, over the 0.54x a rung of quantize may reach"]
    # a small model whose plain result is already 0.61x (fixed overhead): a rung no larger than it passes
    assert _oversized(quantize, source, record(700), plain_bytes=600) == []
    assert _oversized(quantize, source, record(800), plain_bytes=600) == [
        "size 0.80x its input, over the 0.75x a rung of quantize may reach"]


def test_verification_holds_out_samples_spread_through_the_file_when_there_are_enough_to_calibrate_on():
    """Spread, so that a file in time order (silence, then speech) is verified on both and calibrated on both."""
    from hub.inputs import SampleSet

    images = np.arange(70 * 3, dtype=np.float32).reshape(70, 1, 3)
    calibration, verification = SampleSet({"x": images}, "test", {"x": 2}).held_out(32)
    assert calibration.count == 38 and verification.count == 32
    calibrated, verified = calibration.arrays["x"][:, 0, 0] // 3, verification.arrays["x"][:, 0, 0] // 3
    assert not set(calibrated) & set(verified)
    for part in (calibrated, verified):  # both halves of the file in each
        assert part.min() < 10 and part.max() > 60
    few = SampleSet({"x": images[:63]}, "test", {"x": 2})
    assert few.held_out(32) == (few, few)  # too few to spare any: in-sample, as the report says
