"""The `hub` command as a user meets it: clear one-line errors, exit codes, lazy imports, plugin discovery."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HEAVY = ("torch", "tensorflow", "onnxruntime")


def hub_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True,
                          env=os.environ, timeout=600)


def imported_modules_after(code: str, tmp_path: Path) -> set[str]:
    record = tmp_path / "modules.txt"
    script = f"import sys\n{code}\nopen({str(record)!r}, 'w').write(' '.join(sorted(sys.modules)))"
    subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(record.read_text().split())


@pytest.mark.parametrize("argv", [["--help"], ["targets"], ["plugins"], ["plan", "{model}", "--to", "cpu-int8"]])
def test_discovery_commands_import_no_framework(argv, digits_model, tmp_path):
    argv = [a.format(model=digits_model["model"]) for a in argv]
    code = ("from hub.cli import main\ntry:\n    main(" + repr(argv) + ")\nexcept SystemExit:\n    pass")
    loaded = imported_modules_after(code, tmp_path)
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)


def test_plugins_lists_builtins_and_the_out_of_tree_distribution():
    rows = {row["name"]: row for row in json.loads(hub_command("plugins", "--json").stdout)}
    assert rows["torch"]["origin"] == rows["onnx"]["origin"] == "built-in"
    assert rows["linear"]["origin"] == "hub-plugin-linear 0.2.0"
    assert rows["linear"]["formats"] == ["linear-npz"] and rows["linear"]["converters"] == ["linear-to-onnx"]
    assert rows["linear"]["targets"] == ["linear-onnx"] and rows["linear"]["error"] is None
    assert "torch-dynamo-export" in rows["torch"]["converters"]


def test_out_of_tree_plugin_takes_part_in_planning_and_converting(tmp_path):
    generator = np.random.default_rng(1)
    model = tmp_path / "linear.npz"
    np.savez(model, weight=generator.standard_normal((3, 5)), bias=generator.standard_normal(3),
             hub_linear=np.array(1))
    plan = hub_command("plan", str(model), "--to", "onnxruntime-cpu", "--json")
    assert [s["name"] for s in json.loads(plan.stdout)["routes"][0]["steps"]] == ["linear-to-onnx", "onnxslim"]
    converted = hub_command("convert", str(model), "--to", "linear-onnx", "-o", str(tmp_path / "out"), "--json")
    report = json.loads(converted.stdout)
    assert report["route"] == ["linear-to-onnx"] and report["steps"][0]["plugin"] == "linear"
    assert report["final"]["fidelity"]["max_abs"] < 1e-5


def test_targets_say_whether_they_are_usable():
    output = hub_command("targets").stdout
    for name in ("cpu-int8", "onnxruntime-cpu", "onnxruntime-fp16", "linear-onnx"):
        assert name in output
    assert "yes" in output


def test_inspect_describes_inputs_and_outputs(digits_model):
    described = json.loads(hub_command("inspect", str(digits_model["model"]), "--json").stdout)
    assert described["format"] == "torch-export"
    assert described["inputs"] == [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert described["parameters"] > 10_000


def truncated_onnx(tmp_path: Path, digits_onnx: Path) -> Path:
    path = tmp_path / "truncated.onnx"
    path.write_bytes(digits_onnx.read_bytes()[:200])
    return path


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory, digits_model) -> Path:
    import torch

    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    torch.onnx.export(digits_model["module"].eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False)
    return path


def bad_inputs(tmp_path: Path, digits_model, digits_onnx) -> dict[str, tuple[list[str], int, str]]:
    import torch

    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "text.onnx").write_text("this is not a model\n")
    torch.save(digits_model["module"], tmp_path / "whole.pt")
    model = str(digits_model["model"])
    return {
        "empty file": (["convert", str(tmp_path / "empty.onnx"), "--to", "cpu-int8"], 2, "is empty"),
        "truncated onnx": (["convert", str(truncated_onnx(tmp_path, digits_onnx)), "--to", "cpu-int8"], 2,
                           "not a model in any format"),
        "text named .onnx": (["convert", str(tmp_path / "text.onnx"), "--to", "cpu-int8"], 2,
                             "not a model in any format"),
        "pickle without trust": (["convert", str(tmp_path / "whole.pt"), "--to", "cpu-int8"], 2,
                                 "--trust-pickle"),
        "unknown target": (["convert", model, "--to", "tpu-9000"], 2, "unknown target 'tpu-9000'"),
        "missing file": (["convert", str(tmp_path / "nope.pt2"), "--to", "cpu-int8"], 2, "does not exist"),
        "bad calibration": (["convert", model, "--to", "cpu-int8", "--calibration", str(tmp_path / "text.onnx")],
                            2, "cannot read calibration data"),
    }


def test_bad_input_gives_one_line_a_nonzero_exit_and_writes_nothing(tmp_path, digits_model, digits_onnx):
    for label, (argv, code, message) in bad_inputs(tmp_path, digits_model, digits_onnx).items():
        out = tmp_path / f"out-{label.replace(' ', '-')}"
        result = hub_command(*argv, "-o", str(out))
        assert result.returncode == code, (label, result.stderr)
        assert message in result.stderr, (label, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, (label, result.stderr)
        assert not out.exists(), label


def test_no_route_names_what_is_reachable_and_what_to_install(digits_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_PLUGINS", "hub_unreachable")
    for extra in ([], ["convert", "-o", str(tmp_path / "o")]):
        command = ["plan"] if not extra else extra[:1]
        result = hub_command(*command, str(digits_model["model"]), "--to", "tf-savedmodel", *extra[1:])
        assert result.returncode == 4, result.stderr
        assert "no route from torch-export/fp32/raw to target 'tf-savedmodel'" in result.stderr
        assert "reachable with what is installed:" in result.stderr and "onnx/int8/optimized" in result.stderr
        assert "pip install 'conversion-hub[tf]'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "text.onnx").write_text("nope")
    result = hub_command("--debug", "inspect", str(tmp_path / "text.onnx"))
    assert result.returncode == 2 and "not a model in any format" in result.stderr


def test_help_is_fast_and_lists_exit_codes():
    result = hub_command("--help")
    assert result.returncode == 0 and "Exit codes" in result.stdout


def test_debug_is_taken_before_or_after_the_command():
    from hub.cli import _parser

    parse = _parser().parse_args
    assert not parse(["plan", "m.onnx", "--to", "tflite"]).debug
    assert parse(["plan", "m.onnx", "--to", "tflite", "--debug"]).debug
    assert parse(["--debug", "convert", "m.onnx", "--to", "tflite"]).debug
