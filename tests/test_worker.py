from __future__ import annotations

import numpy as np
import pytest

from hub.errors import StepFailedError, UsageError
from hub.worker import WorkerCrashed, call_worker


def run_job(function: str, tmp_path, timeout: float = 60):
    source = tmp_path / "in.txt"
    source.write_text("model")
    return call_worker("step", {"ref": f"worker_jobs:{function}", "context": {
        "input_path": str(source), "workdir": str(tmp_path), "options": {}, "inputs": [], "calibration": None,
    }}, timeout=timeout)


def test_returns_the_artifact_and_notes(tmp_path):
    value = run_job("ok", tmp_path)
    assert (tmp_path / "out.txt").read_text() == "MODEL"
    assert value["notes"] == {"length": 5}


def test_library_exception_becomes_step_failure_with_traceback(tmp_path):
    with pytest.raises(StepFailedError, match="ValueError: library said no") as caught:
        run_job("raises", tmp_path)
    assert "Traceback" in caught.value.detail


def test_our_error_keeps_its_class(tmp_path):
    with pytest.raises(UsageError, match="give --input"):
        run_job("raises_ours", tmp_path)


def test_sys_exit_is_a_failure_not_an_exit_of_the_hub(tmp_path):
    with pytest.raises(StepFailedError, match="SystemExit: 3"):
        run_job("exits", tmp_path)


def test_sigkill_is_reported(tmp_path):
    with pytest.raises(WorkerCrashed, match="killed by SIGKILL"):
        run_job("killed", tmp_path)


def test_timeout_kills_the_worker(tmp_path):
    with pytest.raises(WorkerCrashed, match="timed out after 2 s"):
        run_job("hangs", tmp_path, timeout=2)


def test_memory_limit_kills_a_hungry_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_MEMORY_LIMIT_MB", "300")
    with pytest.raises(WorkerCrashed, match="over the memory limit of 300 MB"):
        run_job("hogs_memory", tmp_path)


def test_workers_cannot_reach_the_network(tmp_path):
    value = run_job("reaches_out", tmp_path)
    assert value["notes"]["attempts"] == ["NetworkRefused", "NetworkRefused"]


def test_a_step_that_bounds_its_own_time_gets_a_timeout_long_enough_for_it():
    from hub.declarations import Option, Step
    from hub.execution import worker_timeout
    from hub.states import Requirement

    step = Step(name="train", accepts=Requirement.of(format="x"), produces={"traits": "+t"}, run="x:y",
                timeout=1800.0, options=(Option("budget", float, 600.0, "seconds"),), time_budget_option="budget")
    assert worker_timeout(step, {}, 900.0) == 1800.0
    assert worker_timeout(step, {"budget": 600.0}, 900.0) == 1800.0  # within the declared timeout
    assert worker_timeout(step, {"budget": 2400.0}, 900.0) == 2400.0 * 1.25 + 60.0
    undeclared = Step(name="convert", accepts=Requirement.of(format="x"), produces={"format": "y"}, run="x:y")
    assert worker_timeout(undeclared, {}, 900.0) == 900.0  # the runner's default
    assert worker_timeout(undeclared, {"budget": 2400.0}, 900.0) == 900.0  # not its time budget: no effect


def test_bfloat16_outputs_cross_the_worker_boundary_as_float32(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from hub.worker import load_outputs, save_outputs

    output = np.array([[1.5, -2.25, 3.0]], dtype=ml_dtypes.bfloat16)
    save_outputs(tmp_path / "outputs.npz", [[output]])
    (loaded,) = load_outputs(tmp_path / "outputs.npz")[0]
    assert loaded.dtype == np.float32 and loaded.tolist() == [[1.5, -2.25, 3.0]]
