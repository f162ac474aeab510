"""tflite-arm proven on ARM: the converted .tflite runs on an aarch64 LiteRT interpreter under qemu user-mode
emulation (the litert-arm64 backend) and gives the x86 litert backend's outputs: byte for byte for the
full-integer model, within float rounding for a float one.

The platform (qemu, an aarch64 Debian Python, the aarch64 ai-edge-litert wheel) is prepared once per session
into $HUB_PLATFORMS_DIR when it is set (to reuse one between runs), else into a session folder: about 100 MB
downloaded from the host's Debian mirror and the package index."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

import hub

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def arm64_platform(tmp_path_factory) -> dict:
    """The prepared platform's marker, with how long prepare() took in this session."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("HUB_PLATFORMS_DIR"):
            patch.setenv("HUB_PLATFORMS_DIR", str(tmp_path_factory.mktemp("platforms")))
        from hub_litert_arm64.setup import is_prepared, platform_folder, prepare

        started = time.monotonic()
        description = prepare()
        seconds = time.monotonic() - started
        assert is_prepared()
        marker = json.loads((platform_folder() / "ready.json").read_text())
        print(f"\narm64 platform prepared in {seconds:.1f} s: {description}")
        yield {**marker, "seconds": seconds}


@pytest.fixture(scope="module")
def heldout_feeds(digits_model) -> list[np.ndarray]:
    return list(np.load(digits_model["heldout"])["image"][:32])


@pytest.fixture(scope="module")
def converted(digits_model, tmp_path_factory) -> dict[str, Path]:
    """The digits CNN as tflite-arm (full-integer int8, int8 I/O) and as float32 tflite, converted once."""
    cache = tmp_path_factory.mktemp("arm64-steps")
    paths = {}
    for target in ("tflite-arm", "tflite"):
        result = hub.convert(digits_model["model"], to=target, calibration=digits_model["calibration"],
                             output=tmp_path_factory.mktemp(target), cache_dir=cache)
        paths[target] = result.path
        paths[target + ":state"] = result.report.final.state
    return paths


def feeds(images: list[np.ndarray], shape: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    # The digits have one channel, so NCHW -> NHWC is a reshape.
    return [{"image": image.reshape(shape).astype(np.float32)} for image in images]


def input_shape(path: Path) -> tuple[int, ...]:
    from ai_edge_litert.interpreter import Interpreter

    return tuple(int(d) for d in Interpreter(model_path=str(path)).get_input_details()[0]["shape"])


def run_both(path: Path, images: list[np.ndarray]) -> tuple[list, list, float]:
    from hub_litert.interpreter import run_samples
    from hub_litert_arm64.emulated import run

    samples = feeds(images, input_shape(path))
    x86 = run_samples(path, samples, threads=2)
    started = time.monotonic()
    arm = run(path, samples, threads=2)
    return x86, arm, time.monotonic() - started


def test_the_arm64_backend_declares_its_platform_and_how_to_prepare_it():
    from hub.plugins import load_catalog

    backend = load_catalog().backends["litert-arm64"]
    assert backend.platform == "arm64" and backend.formats == frozenset({"tflite"})
    assert backend.prepare == "hub_litert_arm64.setup:prepare"
    assert backend.prepared == "hub_litert_arm64.setup:is_prepared"


def test_prepare_pins_an_armv82_cpu_and_is_idempotent(arm64_platform):
    from hub_litert_arm64.setup import prepare

    assert arm64_platform["cpu"] == "neoverse-n1"
    assert arm64_platform["litert_version"] == "2.3.0"
    assert arm64_platform["python"].startswith("python3.")
    started = time.monotonic()
    assert prepare() == arm64_platform["description"]
    assert time.monotonic() - started < 1.0


def test_full_integer_tflite_arm_gives_byte_identical_outputs_on_arm64(arm64_platform, converted, heldout_feeds):
    from hub_litert_arm64.emulated import latency

    model = converted["tflite-arm"]
    assert converted["tflite-arm:state"].startswith("tflite/int8")
    x86, arm, seconds = run_both(model, heldout_feeds)
    assert len(arm) == len(x86) == 32
    assert all(len(a) == len(b) == 1 for a, b in zip(x86, arm, strict=True))
    pairs = [(a, b) for xs, arms in zip(x86, arm, strict=True) for a, b in zip(xs, arms, strict=True)]
    assert all(a.dtype == b.dtype == np.float32 for a, b in pairs)
    assert all(np.array_equal(a, b) for a, b in pairs)
    emulated_ms = latency(model, feeds(heldout_feeds[:1], input_shape(model))[0], 2, 20)
    print(f"\ntflite-arm on arm64 ({arm64_platform['cpu']}): 32 samples in {seconds:.2f} s with the emulator's "
          f"start; {emulated_ms:.3f} ms per inference emulated")
    assert 0 < emulated_ms < 1000


def test_float_tflite_agrees_on_arm64_within_rounding(arm64_platform, converted, heldout_feeds):
    assert converted["tflite:state"].startswith("tflite/fp32")
    x86, arm, _ = run_both(converted["tflite"], heldout_feeds)
    pairs = [(a, b) for xs, arms in zip(x86, arm, strict=True) for a, b in zip(xs, arms, strict=True)]
    max_abs = max(float(np.abs(a - b).max()) for a, b in pairs)
    print(f"\nfloat tflite x86 vs arm64: max-abs {max_abs:.3g}")
    assert max_abs < 1e-5


def test_a_sample_that_matches_no_input_is_a_usage_error_on_arm64(arm64_platform, converted, heldout_feeds):
    from hub_litert_arm64.emulated import run

    image = heldout_feeds[0].reshape(input_shape(converted["tflite-arm"]))
    with pytest.raises(hub.UsageError, match="inputs are"):
        run(converted["tflite-arm"], [{"a": image, "b": image}], threads=1)


def test_a_crash_under_emulation_is_a_step_failure_naming_the_cpu(arm64_platform, converted, heldout_feeds,
                                                                  monkeypatch):
    import dataclasses

    import hub_litert_arm64.emulated as emulated
    from hub_litert_arm64.setup import load_platform

    # cortex-a72 is ARMv8.0: the wheel's ARMv8.2 instructions raise SIGILL under emulation
    armv80 = dataclasses.replace(load_platform(), cpu="cortex-a72")
    monkeypatch.setattr(emulated, "load_platform", lambda: armv80)
    model = converted["tflite-arm"]
    with pytest.raises(hub.StepFailedError) as raised:
        emulated.run(model, feeds(heldout_feeds[:1], input_shape(model)), threads=1)
    assert "-cpu cortex-a72" in raised.value.message and "crashed" in raised.value.message
    assert "Illegal instruction" in (raised.value.detail or "")


def test_convert_with_check_on_arm64_reports_a_byte_identical_run(arm64_platform, digits_model, tmp_path):
    result = hub.convert(digits_model["model"], to="tflite-arm", calibration=digits_model["calibration"],
                         output=tmp_path / "out", check_on=["arm64"])
    check = result.report.to_json()["final"]["platform_checks"][0]
    assert check["platform"] == "arm64" and check["backend"] == "litert-arm64"
    assert check["exact"] and check["matches"] and check["max_abs"] == 0.0 and check["samples"] == 32
    assert "neoverse-n1" in check["runtime"] and check["emulated_ms_per_inference"] > 0
    print(f"\n--check-on arm64: byte-identical on {check['samples']} samples, "
          f"{check['emulated_ms_per_inference']:.2f} ms per inference emulated")


def test_hub_verify_on_arm64_from_the_command_line(arm64_platform, converted):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "hub.cli", "verify", str(converted["tflite-arm"]), "--on",
                             "arm64", "--json"], capture_output=True, text=True, env=os.environ, timeout=600)
    assert result.returncode == 0, result.stderr
    check = json.loads(result.stdout)
    assert check["matches"] and check["exact"]
