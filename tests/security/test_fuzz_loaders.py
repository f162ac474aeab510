"""Format detection and every loader over truncated, bit-flipped and random files: each case must end in a
model the hub recognises or in one of our errors, never a crash, a hang, or a library exception."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import hub
from hub.errors import HubError
from hub.plugins import load_catalog
from hub.sources import detect_source

CASES: dict[str, int] = {"detect": 0, "inspect": 0}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, digits_model) -> dict[str, bytes]:
    import torch

    folder = tmp_path_factory.mktemp("seeds")
    torch.onnx.export(digits_model["module"].eval(), (torch.zeros(1, 1, 8, 8),), str(folder / "m.onnx"),
                      dynamo=False)
    torch.jit.save(torch.jit.trace(digits_model["module"].eval(), torch.zeros(1, 1, 8, 8)), str(folder / "m.pt"))
    np.savez(folder / "linear.npz", weight=np.ones((2, 3)), bias=np.zeros(2), hub_linear=np.array(1))
    files = {"onnx": folder / "m.onnx", "torchscript": folder / "m.pt", "pt2": digits_model["model"],
             "linear": folder / "linear.npz"}
    return {name: path.read_bytes() for name, path in files.items()}


def mutate(data: bytes, kind: str, position: float, value: int) -> bytes:
    index = int(position * max(len(data) - 1, 0))
    if kind == "truncate":
        return data[:index]
    if kind == "flip":
        mutated = bytearray(data)
        mutated[index] ^= 1 << (value % 8)
        return bytes(mutated)
    if kind == "zero-run":
        return data[:index] + b"\0" * 64 + data[index + 64:]
    return np.random.default_rng(value).integers(0, 256, size=value % 4096 + 1, dtype=np.uint8).tobytes()


mutations = st.tuples(st.sampled_from(["onnx", "torchscript", "pt2", "linear"]),
                      st.sampled_from(["truncate", "flip", "zero-run", "random"]),
                      st.floats(0, 1), st.integers(0, 2 ** 16))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutations)
def test_detection_never_crashes(case, seeds, tmp_path):
    seed, kind, position, value = case
    path = tmp_path / f"fuzz-{seed}.bin"
    path.write_bytes(mutate(seeds[seed], kind, position, value))
    CASES["detect"] += 1
    try:
        detect_source(load_catalog(), path, tmp_path / "scratch")
    except HubError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutations)
def test_loaders_end_in_our_errors(case, seeds, tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_DESCRIBE_TIMEOUT", "120")
    seed, kind, position, value = case
    path = tmp_path / f"fuzz-{seed}.bin"
    path.write_bytes(mutate(seeds[seed], kind, position, value))
    CASES["inspect"] += 1
    try:
        hub.inspect(path)
    except HubError as error:
        assert error.message and "\n" not in error.message.strip().splitlines()[0]


def test_report_fuzz_cases(capsys):
    with capsys.disabled():
        print(f"\nfuzz: {CASES['detect']} detection cases and {CASES['inspect']} full loader cases, "
              "all ended in a model or one of our errors")
    assert CASES["detect"] >= 100 and CASES["inspect"] >= 20


def test_a_damaged_deflate_stream_in_an_archive_is_our_error(tmp_path):
    """Found by the fuzzer: a zip whose compressed data is corrupt raised zlib.error from unpacking."""
    np.savez_compressed(tmp_path / "a.npz", x=np.arange(1000.0))
    damaged = bytearray((tmp_path / "a.npz").read_bytes())
    damaged[60] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(damaged))
    with pytest.raises(HubError, match="damaged archive"):
        detect_source(load_catalog(), tmp_path / "bad.npz", tmp_path / "scratch")
