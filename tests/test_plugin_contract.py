"""The plugin contract checked at load: a broken plugin is listed with its reason and skipped, never takes the
catalog down; conversions that need it fail with exit 6 naming it. Step options are typed and declared once;
compression requests come from the plugins; targets come from registry.yaml plus the user's registry files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import hub
from hub.errors import PluginError, UsageError
from hub.plugins import load_catalog, reset_catalog

HEADER = """\
from hub.declarations import Backend, Format, Option, Request, Step, Target
from hub.hookspecs import hookimpl
from hub.states import Requirement
"""
STEP = 'Step(name="{name}", accepts=Requirement.of(format="onnx"), produces={produces}, run="{run}"{extra})'
BROKEN_PLUGINS = {
    "hub_import_error": ("import not_a_module_anywhere\n", "ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
    "hub_misspelt_hook": ("@hookimpl\ndef hub_convertors():\n    return []\n", "unknown hook 'hub_convertors'"),
    "hub_duplicate_format": (
        '@hookimpl\ndef hub_formats():\n    return [Format(name="onnx", detect="hub_duplicate_format:detect")]\n',
        "declares the format 'onnx', which plugin 'onnx' declared first"),
    "hub_misspelt_state": (
        "@hookimpl\ndef hub_converters():\n    return [" + STEP.format(name="to-x", produces='{"fromat": "x"}',
                                                           run="m:f", extra="") + "]\n",
        "step 'to-x': produces unknown state attribute(s) 'fromat'"),
    "hub_bad_reference": (
        "@hookimpl\ndef hub_converters():\n    return [" + STEP.format(name="to-y", produces='{"format": "y"}',
                                                           run="not a reference", extra="") + "]\n",
        "run 'not a reference' is not a reference of the form 'package.module:function'"),
    "hub_bad_option": (
        "@hookimpl\ndef hub_compressors():\n    return [" + STEP.format(
            name="squeeze", produces='{"traits": "+squeezed"}', run="m:f",
            extra=', options=(Option("level", dict, {}, "how hard"),)') + "]\n",
        "option level: type <class 'dict'> is not one of bool, int, float, str, list"),
    "hub_bad_request": (
        "@hookimpl\ndef hub_compressors():\n    return [" + STEP.format(
            name="squash", produces='{"traits": "+squashed"}', run="m:f",
            extra=', satisfies=(Request("squash", "traits", "squashed", "level"),)') + "]\n",
        "request squash sets option 'level', which the step does not declare"),
    "hub_unknown_backend": (
        '@hookimpl\ndef hub_targets():\n    return [Target(name="tpu-x", backend="tpu-runtime", '
        'requires=Requirement.of(format="onnx"))]\n',
        "target 'tpu-x' runs on backend 'tpu-runtime', which no plugin declares"),
}
WORKING = ("torch", "onnx", "onnxruntime", "tensorflow", "litert", "linear")  # plugins that load beside them


def write_plugins(folder: Path, plugins: dict[str, str]) -> None:
    folder.mkdir(exist_ok=True)
    for name, body in plugins.items():
        (folder / f"{name}.py").write_text(HEADER + body)


def hub_command(*args: str, plugins: Path | None = None, names: str = "", **env: str
                ) -> subprocess.CompletedProcess:
    variables = {**os.environ, **env}
    if plugins is not None:
        variables["PYTHONPATH"] = os.pathsep.join([str(plugins), variables.get("PYTHONPATH", "")])
        variables["HUB_PLUGINS"] = names
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True,
                          env=variables, timeout=300)


def linear_model(path: Path, seed: int = 1) -> Path:
    generator = np.random.default_rng(seed)
    np.savez(path, weight=generator.standard_normal((3, 5)), bias=generator.standard_normal(3),
             hub_linear=np.array(1))
    return path


@pytest.fixture
def broken_catalog(tmp_path, monkeypatch):
    write_plugins(tmp_path / "plugins", {name: body for name, (body, _) in BROKEN_PLUGINS.items()})
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setenv("HUB_PLUGINS", ",".join(BROKEN_PLUGINS))
    reset_catalog()
    return load_catalog()


def test_each_broken_plugin_is_marked_with_its_reason_and_the_rest_loads(broken_catalog):
    records = {record.name: record for record in broken_catalog.plugins}
    for name, (_, reason) in BROKEN_PLUGINS.items():
        assert records[name].error is not None and reason in records[name].error, (name, records[name].error)
    assert not [r.name for r in broken_catalog.plugins if r.error and r.name in WORKING]
    assert broken_catalog.owner["onnx"] == "onnx" and "to-x" not in broken_catalog.steps
    assert "tpu-x" not in broken_catalog.targets and "cpu-int8" in broken_catalog.targets


def test_hub_plugins_exits_0_and_lists_broken_plugins(tmp_path):
    write_plugins(tmp_path / "plugins", {name: body for name, (body, _) in BROKEN_PLUGINS.items()})
    listed = hub_command("plugins", "--json", plugins=tmp_path / "plugins", names=",".join(BROKEN_PLUGINS))
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert {name for name, row in rows.items() if row["error"]} >= set(BROKEN_PLUGINS)  # others may be installed
    assert not [name for name in WORKING if rows[name]["error"]]
    assert rows["hub_misspelt_state"]["converters"] == ["to-x"]  # what it declared, kept for the listing
    text = hub_command("plugins", plugins=tmp_path / "plugins", names=",".join(BROKEN_PLUGINS))
    assert text.returncode == 0 and text.stdout.count("broken") >= len(BROKEN_PLUGINS)


def test_a_conversion_needing_a_broken_plugin_exits_6_naming_it_and_others_work(tmp_path):
    write_plugins(tmp_path / "plugins", {
        # a valid step to format "xyz" beside a bad declaration: the whole plugin is broken
        "hub_xyz_steps": "@hookimpl\ndef hub_converters():\n    return [" + STEP.format(
            name="onnx-to-xyz", produces='{"format": "xyz"}', run="m:f", extra="") + ", " + STEP.format(
            name="bad", produces='{"fromat": "q"}', run="m:f", extra="") + "]\n",
        "hub_xyz_target": '@hookimpl\ndef hub_targets():\n    return [Target(name="xyz", backend="onnxruntime", '
                          'requires=Requirement.of(format="xyz"))]\n',
    })
    model = str(linear_model(tmp_path / "linear.npz"))
    names = "hub_xyz_steps,hub_xyz_target,hub_unknown_backend"
    write_plugins(tmp_path / "plugins", {"hub_unknown_backend": BROKEN_PLUGINS["hub_unknown_backend"][0]})
    needs_step = hub_command("plan", model, "--to", "xyz", plugins=tmp_path / "plugins", names=names)
    assert needs_step.returncode == 6, needs_step.stderr
    assert "needs broken plugin(s): hub_xyz_steps (invalid declaration: step 'bad'" in needs_step.stderr
    its_target = hub_command("plan", model, "--to", "tpu-x", plugins=tmp_path / "plugins", names=names)
    assert its_target.returncode == 6 and "plugin 'hub_unknown_backend', which is broken" in its_target.stderr
    working = hub_command("plan", model, "--to", "onnxruntime-cpu", "--json", plugins=tmp_path / "plugins",
                          names=names)
    assert working.returncode == 0, working.stderr
    assert json.loads(working.stdout)["routes"][0]["steps"][0]["name"] == "linear-to-onnx"


def test_the_out_of_tree_compressor_is_requested_through_compress(tmp_path):
    model = linear_model(tmp_path / "linear.npz", seed=3)
    converted = hub_command("convert", str(model), "--to", "linear-onnx", "--compress", "round:1",
                            "-o", str(tmp_path / "out"), "--json")
    assert converted.returncode == 0, converted.stderr
    report = json.loads(converted.stdout)
    assert report["route"] == ["linear-round", "linear-to-onnx"]
    assert report["steps"][0]["plugin"] == "linear" and report["steps"][0]["notes"] == {"decimals": 1}
    import onnx
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(report["final"]["path"]).graph.initializer}
    with np.load(model) as source:
        np.testing.assert_allclose(weights["weight"], np.round(source["weight"], 1).astype(np.float32))
    cosine = report["final"]["fidelity"]["cosine"]
    assert 0.99 < cosine < 0.99999, cosine  # rounding to 0.1 costs a little, within the step's declared bound
    listed = hub_command("plugins", "--verbose")
    assert "round:DECIMALS: traits rounded" in listed.stdout
    assert "linear-round decimals (int, default 2): decimals kept in each weight" in listed.stdout


def test_compress_refuses_unknown_requests_and_bad_values_with_the_known_ones(tmp_path):
    model = str(linear_model(tmp_path / "linear.npz"))
    unknown = hub_command("plan", model, "--to", "linear-onnx", "--compress", "shrink:2")
    assert unknown.returncode == 2
    assert "unknown compression 'shrink'; known: clip, distill, fp16, int4-weights, int8, prune" in unknown.stderr
    assert "round" in unknown.stderr
    bad_value = hub_command("plan", model, "--to", "linear-onnx", "--compress", "round:two")
    assert bad_value.returncode == 2 and "round: option decimals takes a int" in bad_value.stderr


def test_an_unknown_step_option_is_refused_with_the_known_ones(tmp_path):
    model = linear_model(tmp_path / "linear.npz")
    with pytest.raises(UsageError, match="step linear-round has no option 'decimal'; its options: decimals"):
        hub.convert(model, "linear-onnx", compress=["round:1"], dry_run=True,
                    step_options={"linear-round": {"decimal": 1}})
    with pytest.raises(UsageError, match="names no installed step 'linear-rounding'"):
        hub.convert(model, "linear-onnx", dry_run=True, step_options={"linear-rounding": {"decimals": 1}})
    report = hub.convert(model, "linear-onnx", compress=["round:1"], dry_run=True,
                         step_options={"linear-round": {"decimals": "3"}, "*": {"anything": True}}).report
    assert report.planned[0]["steps"][0]["name"] == "linear-round"


def test_step_options_are_typed_and_declared_once():
    catalog = load_catalog()
    prune = catalog.steps["torch-magnitude-prune"]
    assert prune.defaults() == {"sparsity": 0.5, "scope": "global", "exempt_depthwise": True,
                                "exempt_first_layer": True}
    assert prune.check_options({"sparsity": "0.25", "exempt_depthwise": "no"}) == {
        "sparsity": 0.25, "exempt_depthwise": False}
    with pytest.raises(UsageError, match="sparsity=1.5: must be between 0 and 1"):
        prune.check_options({"sparsity": 1.5})
    distill = catalog.steps["torch-distill"]
    assert distill.path_options() == {"samples"} and distill.time_budget_option == "max_seconds"
    assert distill.wants_later_precisions and not prune.wants_later_precisions
    from hub_torch.distill import DISTILL_DEFAULTS

    assert DISTILL_DEFAULTS == distill.defaults()  # the run function's fallback is the declaration itself


def test_hub_registry_adds_and_replaces_targets(tmp_path):
    registry = tmp_path / "my.yaml"
    registry.write_text(textwrap.dedent("""\
        targets:
          my-onnx:
            description: plain ONNX for my board
            backend: onnxruntime
            requires: {format: onnx, precision: fp32}
            tolerance: {min_cosine: 0.999}
          cpu-int8:
            description: my stricter int8
            backend: onnxruntime
            requires: {format: onnx, precision: int8}
            tolerance: {min_cosine: 0.995}
        """))
    listed = hub_command("targets", HUB_REGISTRY=str(registry))
    assert listed.returncode == 0, listed.stderr
    assert "my-onnx" in listed.stdout and "plain ONNX for my board" in listed.stdout
    assert "my stricter int8" in listed.stdout
    flagged = hub_command("targets", "--registry", str(registry))
    assert flagged.returncode == 0 and "my-onnx" in flagged.stdout
    model = linear_model(tmp_path / "linear.npz")
    plan = hub_command("plan", str(model), "--to", "my-onnx", "--registry", str(registry), "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["target"] == "my-onnx"


def test_a_malformed_user_registry_exits_2_naming_the_file_and_target(tmp_path):
    registry = tmp_path / "bad.yaml"
    registry.write_text("targets:\n  my-npu:\n    backend: onnxruntime\n    requires: {fromat: onnx}\n")
    result = hub_command("targets", HUB_REGISTRY=str(registry))
    assert result.returncode == 2
    assert f"target 'my-npu' in {registry} is malformed: unknown state attribute 'fromat'" in result.stderr
    missing = hub_command("targets", "--registry", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read the registry file" in missing.stderr


def test_a_registry_target_on_an_unknown_backend_is_refused_when_converting(tmp_path, monkeypatch):
    registry = tmp_path / "npu.yaml"
    registry.write_text("targets:\n  my-npu:\n    backend: npu-runtime\n    requires: {format: onnx}\n")
    monkeypatch.setenv("HUB_REGISTRY", str(registry))
    reset_catalog()
    with pytest.raises(UsageError, match=f"target 'my-npu' \\(from {registry}\\) runs on backend 'npu-runtime'"):
        hub.convert(linear_model(tmp_path / "linear.npz"), "my-npu", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_target_from_a_broken_plugin_is_a_plugin_error(broken_catalog, tmp_path):
    with pytest.raises(PluginError, match="target 'tpu-x' comes from plugin 'hub_unknown_backend', which is broken"):
        hub.plan(linear_model(tmp_path / "linear.npz"), "tpu-x")
