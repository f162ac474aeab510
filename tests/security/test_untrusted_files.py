"""Attacks planted in model files: each must be refused with our error and leave no trace."""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

import hub

ATTACKS_PLANTED: list[str] = []


class WritesAFile:
    """Unpickling this calls os.system: the classic malicious pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_torch_pickle(tmp_path: Path) -> tuple[Path, Path]:
    import torch

    marker = tmp_path / "pwned"
    model = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2), "payload": WritesAFile(marker)}, model)
    return model, marker


@pytest.mark.parametrize("command", ["inspect", "plan", "convert"])
def test_pickle_payload_never_runs_without_trust(tmp_path, command):
    model, marker = malicious_torch_pickle(tmp_path)
    ATTACKS_PLANTED.append(f"pickle via {command}")
    argv = [sys.executable, "-m", "hub.cli", command, str(model)]
    if command != "inspect":
        argv += ["--to", "cpu-int8"]
    result = subprocess.run(argv, capture_output=True, text=True, env=os.environ, timeout=300)
    assert result.returncode == 2 and "--trust-pickle" in result.stderr
    assert not marker.exists()


def test_plain_pickle_file_is_not_claimed_by_any_format(tmp_path):
    marker = tmp_path / "pwned"
    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(WritesAFile(marker)))
    ATTACKS_PLANTED.append("bare pickle")
    with pytest.raises(hub.UnsupportedModelError, match="not a model in any format"):
        hub.inspect(model)
    assert not marker.exists()


def onnx_with_external_data(location: str) -> onnx.ModelProto:
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../outside.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "model.onnx"
    path.write_bytes(onnx_with_external_data(location).SerializeToString())
    ATTACKS_PLANTED.append(f"external data {location}")
    with pytest.raises(hub.UnsupportedModelError, match="outside|escapes|absolute"):
        hub.convert(path, to="onnxruntime-cpu", output=tmp_path / "out", inputs=["x:4"])
    assert not (tmp_path / "out").exists()


def zip_slip(tmp_path: Path) -> Path:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        opened.writestr("saved_model/saved_model.pb", b"\x08\x01")
        opened.writestr("../../escaped.txt", b"gotcha")
    return archive


def tar_with_symlink(tmp_path: Path) -> Path:
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as opened:
        link = tarfile.TarInfo("model/weights.bin")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        opened.addfile(link)
    return archive


def tar_bomb(tmp_path: Path, monkeypatch) -> Path:
    import hub.archives

    monkeypatch.setattr(hub.archives, "MAX_UNPACKED_BYTES", 1 << 20)
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as opened:
        payload = b"\0" * (4 << 20)
        info = tarfile.TarInfo("model/huge.bin")
        info.size = len(payload)
        opened.addfile(info, io.BytesIO(payload))
    return archive


@pytest.mark.parametrize("make, reason", [
    (zip_slip, "outside the folder"), (tar_with_symlink, "link"), (tar_bomb, "unpacks to more than")])
def test_hostile_archives_are_refused_and_nothing_escapes(tmp_path, monkeypatch, make, reason):
    work = tmp_path / "work"
    work.mkdir()
    archive = make(work, monkeypatch) if make is tar_bomb else make(work)
    ATTACKS_PLANTED.append(f"archive {make.__name__}")
    with pytest.raises(hub.UnsupportedModelError, match=reason):
        hub.plan(archive, to="cpu-int8")
    assert not (tmp_path / "escaped.txt").exists() and not (work.parent.parent / "escaped.txt").exists()


def test_an_honest_archive_of_a_model_is_unpacked_and_converted(tmp_path, digits_model):
    archive = tmp_path / "digits.tar.gz"
    with tarfile.open(archive, "w:gz") as opened:
        opened.add(digits_model["model"], arcname="digits.pt2")
    result = hub.convert(archive, to="onnxruntime-cpu", output=tmp_path / "out")
    assert result.report.final.fidelity.max_abs < 1e-4


def length_delimited(field: int, payload: bytes) -> bytes:
    size, encoded = len(payload), b""
    while True:
        byte, size = size & 0x7F, size >> 7
        encoded += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return bytes([(field << 3) | 2]) + encoded + payload


def test_deeply_nested_protobuf_is_refused_cleanly(tmp_path):
    """ModelProto.graph -> node -> attribute.g -> node -> ... 5,000 levels deep, written as raw wire bytes
    (the protobuf library refuses to build it): detection must refuse it without crashing the hub."""
    graph = b""
    for _ in range(5000):
        graph = length_delimited(1, length_delimited(5, length_delimited(6, graph)))  # node.attribute.g
    path = tmp_path / "deep.onnx"
    path.write_bytes(b"\x08\x08" + length_delimited(7, graph))  # ir_version 8, then the graph
    ATTACKS_PLANTED.append("protobuf nested 15,000 deep")
    with pytest.raises(hub.UnsupportedModelError):
        hub.convert(path, to="onnxruntime-cpu", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_keras_lambda_that_would_run_a_command_is_refused(tmp_path):
    import keras

    marker = tmp_path / "pwned"
    inputs = keras.Input((4,), name="features")
    # no closure, so Keras stores the code itself: loading the layer would run the command
    function = eval(f"lambda t: t * float(__import__('os').system('touch {marker}') + 1)")
    payload = keras.layers.Lambda(function)
    keras.Model(inputs, keras.layers.Dense(2)(payload(inputs))).save(tmp_path / "lambda.keras")
    marker.unlink()  # building the model above ran it once, here, on purpose
    ATTACKS_PLANTED.append("keras Lambda layer")
    for action in (lambda: hub.inspect(tmp_path / "lambda.keras"),
                   lambda: hub.convert(tmp_path / "lambda.keras", to="tflite", output=tmp_path / "out")):
        try:
            action()
        except hub.UnsupportedModelError as error:
            assert "--trust-code" in error.message
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_report_attacks_planted(capsys):
    with capsys.disabled():
        print(f"\nsecurity: {len(ATTACKS_PLANTED)} attacks planted, 0 escaped: {', '.join(ATTACKS_PLANTED)}")
    assert len(ATTACKS_PLANTED) >= 12
