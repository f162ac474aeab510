"""Crashes mid-run, Ctrl-C, concurrent runs sharing one cache, and byte-identical outputs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.serial  # deadlines of a few seconds: a busy second worker breaks them


def hub_process(*args: str, env: dict[str, str]) -> subprocess.Popen:
    # a runner started in the background by a non-interactive shell ignores SIGINT, and so would its children:
    # the hub must see Ctrl-C as a user's terminal sends it
    return subprocess.Popen([sys.executable, "-m", "hub.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def environment(cache: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HUB_CACHE": str(cache), **extra}


def cache_entries(cache: Path) -> list[str]:
    steps = cache / "steps"
    return sorted(p.name for p in steps.iterdir()) if steps.exists() else []


def test_ctrl_c_stops_cleanly_and_a_rerun_resumes_from_the_cache(digits_model, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    started = tmp_path / "slow-step-started"
    env = environment(cache, HUB_PLUGINS="hub_slow", HUB_SLOW_CLEANUP="1", HUB_SLOW_STARTED=str(started))
    process = hub_process("convert", str(digits_model["model"]), "--to", "onnxruntime-cpu", "-o", str(out), env=env)
    deadline = time.monotonic() + 300
    while not started.exists() and time.monotonic() < deadline:  # export cached, verified; the clean-up runs
        time.sleep(0.5)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in stderr
    assert not out.exists()
    assert len(cache_entries(cache)) == 1 and not list((cache / "tmp").glob("*"))
    rerun = subprocess.run([sys.executable, "-m", "hub.cli", "convert", str(digits_model["model"]), "--to",
                            "onnxruntime-cpu", "-o", str(out), "--json"], capture_output=True, text=True,
                           env=environment(cache, HUB_PLUGINS="hub_slow"), timeout=600)
    report = json.loads(rerun.stdout)
    assert report["route"] == ["torch-dynamo-export", "slow-cleanup"]
    assert [s["cached"] for s in report["steps"]] == [True, False]


def test_a_killed_step_leaves_no_half_written_cache_entry(digits_model, tmp_path, monkeypatch):
    import hub
    from hub.plugins import reset_catalog

    monkeypatch.setenv("HUB_PLUGINS", "hub_faulty")
    monkeypatch.setenv("HUB_FAULT", "kill")
    reset_catalog()
    cache = Path(os.environ["HUB_CACHE"])
    result = hub.convert(digits_model["model"], to="onnxruntime-cpu", output=tmp_path / "out", max_routes=2)
    assert result.report.alternatives_tried[0].reason.endswith("killed by SIGKILL")
    for entry in (cache / "steps").iterdir():
        meta = json.loads((entry / "meta.json").read_text())
        assert meta["step"] != "faulty-export" and (entry / "artifact" / meta["artifact"]).exists()
    assert not list((cache / "tmp").glob("*"))


def linear_model(path: Path, seed: int) -> Path:
    generator = np.random.default_rng(seed)
    np.savez(path, weight=generator.standard_normal((4, 6)), bias=generator.standard_normal(4),
             hub_linear=np.array(1))
    return path


@pytest.mark.slow
def test_eight_concurrent_conversions_share_one_cache_and_match_sequential_runs(digits_model, tmp_path):
    jobs = [(digits_model["model"], "onnxruntime-cpu"), (digits_model["model"], "cpu-int8"),
            (linear_model(tmp_path / "a.npz", 1), "onnxruntime-cpu"), (linear_model(tmp_path / "b.npz", 2), "linear-onnx")]
    calibration = ["--calibration", str(digits_model["calibration"])]

    def command(index: int, model: Path, target: str, out: Path) -> list[str]:
        extra = calibration if model == digits_model["model"] else []
        return ["convert", str(model), "--to", target, "-o", str(out / f"{index}"), "--quiet", *extra]

    sequential = []
    for index, (model, target) in enumerate(jobs):
        done = subprocess.run([sys.executable, "-m", "hub.cli", *command(index, model, target, tmp_path / "seq")],
                              capture_output=True, text=True, env=environment(tmp_path / "seq-cache"), timeout=600)
        assert done.returncode == 0, done.stderr
        sequential.append(Path(done.stdout.strip()).read_bytes())

    shared = tmp_path / "shared-cache"
    running = [hub_process(*command(i, *jobs[i % len(jobs)], tmp_path / "par"), env=environment(shared))
               for i in range(8)]
    outputs = [p.communicate(timeout=900) for p in running]
    assert [p.returncode for p in running] == [0] * 8, [o[1] for o in outputs]
    for index, (stdout, _) in enumerate(outputs):
        assert Path(stdout.strip()).read_bytes() == sequential[index % len(jobs)], index
    for entry in (shared / "steps").iterdir():
        assert (entry / "meta.json").exists()
    print(f"\nconcurrency: 8 conversions at once over one cache, {len(cache_entries(shared))} cache entries, "
          "outputs byte-identical to sequential runs")


def test_editing_a_plugins_code_changes_its_cache_keys(tmp_path, monkeypatch):
    """A plugin edited without a version bump must not be served its old cached results."""
    from hub.cache import code_digest

    package = tmp_path / "hub_edited"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "step.py").write_text("def run(ctx):\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code_digest.cache_clear()
    before = code_digest("hub_edited.step:run")
    (package / "step.py").write_text("def run(ctx):\n    return 2\n")
    code_digest.cache_clear()

    assert code_digest("hub_edited.step:run") != before
    assert code_digest("hub_absent_package.step:run") == "absent"
