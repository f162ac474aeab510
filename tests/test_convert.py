"""End to end through the real libraries: torch.export -> ONNX -> ONNX Runtime, on a trained CNN."""
from __future__ import annotations

import copy
import json

import numpy as np
import onnxruntime as ort
import pytest

import hub
from hub.cache import digest_path


def run_onnx(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: image[None]})[0] for image in images])


def eager(module, images):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(images)).numpy()


def test_cpu_int8_route_is_verified_and_close_on_heldout_digits(digits_model, tmp_path):
    before = digest_path(digits_model["model"])
    result = hub.convert(digits_model["model"], to="cpu-int8", calibration=digits_model["calibration"],
                         output=tmp_path / "out")
    report = result.report.to_json()
    assert report["route"] == ["torch-dynamo-export", "onnxslim", "ort-quantize-static"]
    assert [s["name"] for s in report["steps"]] == report["route"]
    assert all(s["fidelity"]["cosine"] > 0.99 for s in report["steps"])
    assert report["steps"][0]["fidelity"]["max_abs"] < 1e-4  # export itself is exact
    assert report["final"]["state"] == "onnx/int8/optimized" and report["final"]["latency_ms"] > 0
    assert report["final"]["bytes"] < 0.6 * report["steps"][1]["bytes"]
    assert {"torch", "onnxruntime", "conversion-hub"} <= set(report["versions"])
    assert json.loads((tmp_path / "out" / "report.json").read_text())["route"] == report["route"]
    heldout = np.load(digits_model["heldout"])["image"]
    reference, converted = eager(digits_model["module"], heldout), run_onnx(result.path, heldout)
    agreement = (reference.argmax(1) == converted.argmax(1)).mean()
    cosines = [np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(reference, converted, strict=True)]
    assert agreement >= 0.95 and np.mean(cosines) > 0.99
    assert digest_path(digits_model["model"]) == before  # the source is never modified


@pytest.mark.parametrize("target, state", [("onnxruntime-cpu", "onnx/fp32/optimized"),
                                           ("onnxruntime-fp16", "onnx/fp16/optimized"),
                                           ("cpu-int8-dynamic", "onnx/int8-dynamic/optimized")])
def test_every_builtin_target_is_reached_and_runs(digits_model, tmp_path, target, state):
    result = hub.convert(digits_model["model"], to=target, calibration=digits_model["calibration"],
                         output=tmp_path)
    assert result.report.final.state == state
    heldout = np.load(digits_model["heldout"])["image"][:16]
    reference, converted = eager(digits_model["module"], heldout), run_onnx(result.path, heldout)
    assert (reference.argmax(1) == converted.argmax(1)).mean() >= 0.9


def test_rerun_is_served_from_the_cache(digits_model, tmp_path):
    first = hub.convert(digits_model["model"], to="onnxruntime-cpu", output=tmp_path / "a")
    second = hub.convert(digits_model["model"], to="onnxruntime-cpu", output=tmp_path / "b")
    assert not any(s.cached for s in first.report.steps)
    assert all(s.cached for s in second.report.steps)
    assert first.path.read_bytes() == second.path.read_bytes()


def test_in_memory_module_with_example_inputs(digits_model, tmp_path):
    module = copy.deepcopy(digits_model["module"]).train()  # the session's module stays in eval mode
    result = hub.convert(module, to="onnxruntime-cpu", example_inputs=(digits_model["images"][:1],),
                         output=tmp_path)
    assert module.training  # the caller's module keeps its mode
    assert result.report.final.fidelity.max_abs < 1e-4


def test_plan_lists_both_exporter_routes(digits_model):
    plan = hub.plan(digits_model["model"], to="cpu-int8", alternatives=3)
    names = [r.names for r in plan.routes]
    assert names[0] == ["torch-dynamo-export", "onnxslim", "ort-quantize-static"]
    assert ["torch-trace-to-torchscript", "torchscript-onnx-export", "onnxslim", "ort-quantize-static"] in names


def test_dry_run_writes_nothing(digits_model, tmp_path):
    result = hub.convert(digits_model["model"], to="cpu-int8", output=tmp_path / "out", dry_run=True)
    assert result.path is None and not (tmp_path / "out").exists()
    assert result.report.source["inputs"] == [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert "no --calibration" in result.report.warnings[0]
