"""`hub batch` on the local executor: the jobs file and its errors, the journal, isolation, Ctrl-C, exit codes.
(tests/test_batch_ray.py runs the same engine on a real Ray cluster.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from hub.batching import Journal, batch, load_jobs
from hub.errors import MissingDependencyError, UsageError
from onnx_op_models import conv_asymmetric, matmul_gemm

ROOT = Path(__file__).resolve().parent.parent


def write_models(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"conv": folder / "conv.onnx", "gemm": folder / "gemm.onnx", "broken": folder / "broken.onnx"}
    onnx.save(conv_asymmetric()[0], paths["conv"])
    onnx.save(matmul_gemm()[0], paths["gemm"])
    paths["broken"].write_bytes(b"not a model at all")
    return paths


def write_jobs(folder: Path, text: str) -> Path:
    path = folder / "jobs.yaml"
    path.write_text(text)
    return path


MATRIX = """\
matrix:
  models: [conv.onnx, gemm.onnx]
  targets: [onnxruntime-cpu, cpu-int8]
jobs:
  - model: broken.onnx
    to: cpu-int8
  - model: missing.onnx
    to: cpu-int8
"""


def test_matrix_expands_with_defaults_overridden_per_model_target_and_job(tmp_path):
    jobs_file = write_jobs(tmp_path, """\
matrix:
  models:
    - conv.onnx
    - {model: sub/gemm.onnx, calibration: calib.npz, name: gemm-v2}
  targets: [onnxruntime-cpu, {to: cpu-int8, min_top1: 0.8}]
  min_cosine: 0.95
  threads: 2
jobs:
  - model: conv.onnx
    to: cpu-int8
    min-cosine: 0.9
    compress: [prune:0.5]
  - {model: other.pt2, to: tflite, check_on: arm64, job_timeout: 60}
""")
    jobs = {job.id: job for job in load_jobs(jobs_file)}
    assert list(jobs) == ["conv/onnxruntime-cpu", "conv/cpu-int8", "gemm-v2/onnxruntime-cpu", "gemm-v2/cpu-int8",
                          "other/tflite"]
    assert jobs["conv/onnxruntime-cpu"].min_cosine == 0.95 and jobs["conv/onnxruntime-cpu"].threads == 2
    assert jobs["conv/cpu-int8"].min_cosine == 0.9 and jobs["conv/cpu-int8"].min_top1 == 0.8
    assert jobs["conv/cpu-int8"].compress == ("prune:0.5",) and jobs["conv/cpu-int8"].line == 9
    assert jobs["gemm-v2/cpu-int8"].model == tmp_path / "sub" / "gemm.onnx"
    assert jobs["gemm-v2/cpu-int8"].calibration == tmp_path / "calib.npz"
    assert jobs["other/tflite"].check_on == ("arm64",) and jobs["other/tflite"].min_cosine == 0.95
    assert jobs["other/tflite"].job_timeout == 60 and jobs["other/tflite"].threads == 2


@pytest.mark.parametrize("text, where", [
    ("jobs:\n  - model: a.onnx\n    to: cpu-int9\n", "line 3: field `to`: unknown target 'cpu-int9'"),
    ("jobs:\n  - model: a.onnx\n    to: cpu-int8\n    min_cosine: high\n", "line 4: field `min_cosine`: expected a number"),
    ("jobs:\n  - model: a.onnx\n    to: cpu-int8\n    colour: red\n", "line 4: field `colour`: not a job field"),
    ("jobs:\n  - model: a.onnx\n", "line 2: field `to`: missing"),
    ("matrix:\n  models: [a.onnx]\n  targets: [cpu-int8]\n  compress: prune:2\n",
     "line 4: field `compress`: prune: sparsity=2: must be between 0 and 1"),
    ("jobs:\n  - model: a.onnx\n    to: [cpu-int8\n", "line 4: not valid YAML"),
    ("matrix:\n  models: [a.onnx, a.onnx]\n  targets: [cpu-int8]\n", "job a/cpu-int8 appears twice"),
    ("target: cpu-int8\n", "line 1: field `target`: unknown section"),
])
def test_malformed_jobs_file_names_line_and_field(tmp_path, text, where):
    jobs_file = write_jobs(tmp_path, text)
    with pytest.raises(UsageError) as raised:
        load_jobs(jobs_file)
    assert raised.value.message.startswith(f"{jobs_file} ")
    assert where in raised.value.message


def test_bad_jobs_file_exits_2_before_running_anything(tmp_path):
    jobs_file = write_jobs(tmp_path, "matrix:\n  models: [conv.onnx]\n  targets: [cpu-int8, nowhere]\n")
    done = subprocess.run([sys.executable, "-m", "hub.cli", "batch", str(jobs_file), "-o", str(tmp_path / "rel")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"{jobs_file} line 3: field `to`: unknown target 'nowhere'" in done.stderr
    assert not (tmp_path / "rel").exists()


def test_batch_runs_each_job_once_and_journal_reruns_only_what_changed(tmp_path):
    models = write_models(tmp_path)
    jobs_file = write_jobs(tmp_path, MATRIX)
    release = tmp_path / "release"

    first = batch(jobs_file, output=release, workers=2)
    by_job = {(o.model, o.target): o for o in first.outcomes}
    assert first.exit_code == 5 and (first.ran, first.reused) == (6, 0)
    assert [o.model for o in first.failed] == ["broken", "missing"]
    assert "not a model in any format" in by_job["broken", "cpu-int8"].reason
    assert by_job["missing", "cpu-int8"].reason == f"no such file: {models['conv'].parent / 'missing.onnx'}"
    for model in ("conv", "gemm"):
        for target in ("onnxruntime-cpu", "cpu-int8"):
            outcome = by_job[model, target]
            folder = release / model / target
            assert outcome.ok and outcome.cosine >= 0.98 and outcome.bytes > 500
            assert sorted(p.name for p in folder.iterdir()) == sorted([f"{model}.{target}.onnx", "report.html", "report.json"])
            assert json.loads((folder / "report.json").read_text())["final"]["path"] == outcome.output
    assert not (release / "broken").exists() and not (release / ".hub-batch" / "staging").exists()
    table = json.loads((release / "batch.json").read_text())
    assert (table["jobs"], table["failed"]) == (6, 2)
    csv_lines = (release / "batch.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,target,status,bytes,latency_ms,cosine") and len(csv_lines) == 7

    again = batch(jobs_file, output=release, workers=2)
    assert (again.ran, again.reused) == (0, 6) and again.outcomes == [
        o.__class__(**{**o.__dict__, "reused": True}) for o in first.outcomes]

    onnx.save(matmul_gemm()[0], models["conv"])  # a new version of one model: only its jobs run
    changed = batch(jobs_file, output=release, workers=2)
    assert (changed.ran, changed.reused) == (2, 4)
    assert {o.model for o in changed.outcomes if not o.reused} == {"conv"}

    retried = batch(jobs_file, output=release, workers=2, retry_failed=True)
    assert (retried.ran, retried.reused) == (2, 4)
    assert {o.model for o in retried.outcomes if not o.reused} == {"broken", "missing"}
    assert len(Journal(release).path.read_text().splitlines()) == 6 + 2 + 2


def test_crashing_and_hanging_jobs_fail_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_PLUGINS", "hub_misbehaving")
    write_models(tmp_path)
    (tmp_path / "crash.onnx").write_bytes(b"CRASH now")
    (tmp_path / "hang.onnx").write_bytes(b"HANG forever")
    jobs_file = write_jobs(tmp_path, """\
jobs:
  - {model: crash.onnx, to: cpu-int8}
  - {model: hang.onnx, to: cpu-int8, job_timeout: 3}
  - {model: conv.onnx, to: cpu-int8}
""")
    result = batch(jobs_file, output=tmp_path / "release", workers=2)
    crash, hang, conv = result.outcomes
    assert crash.reason.startswith("the job's process exited with status 7 before finishing")
    assert hang.reason == "timed out after 3 s (job_timeout)" and 3 <= hang.seconds < 3 + 20
    assert conv.ok and (tmp_path / "release" / "conv" / "cpu-int8" / "conv.cpu-int8.onnx").exists()
    assert sorted(p.name for p in (tmp_path / "release").iterdir()) == [".hub-batch", "batch.csv", "batch.json",
                                                                       "conv"]


def test_ctrl_c_exits_130_keeping_finished_jobs_and_no_partial_output(tmp_path):
    write_models(tmp_path)
    (tmp_path / "hang.onnx").write_bytes(b"HANG forever")
    jobs_file = write_jobs(tmp_path, "jobs:\n  - {model: conv.onnx, to: cpu-int8}\n"
                                     "  - {model: hang.onnx, to: cpu-int8}\n")
    release = tmp_path / "release"
    process = subprocess.Popen([sys.executable, "-m", "hub.cli", "batch", str(jobs_file), "-o", str(release),
                                "-j", "1"], env={**os.environ, "HUB_PLUGINS": "hub_misbehaving"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "hang.onnx.started").exists():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "finished jobs are in the journal" in stderr
    journal = Journal(release).finished()
    assert [(o.model, o.status) for o in journal.values()] == [("conv", "ok")]
    assert sorted(p.name for p in release.iterdir()) == [".hub-batch", "conv"]
    assert not (release / ".hub-batch" / "staging").exists()

    onnx.save(matmul_gemm()[0], tmp_path / "hang.onnx")  # the cause fixed, the same command resumes
    resumed = batch(jobs_file, output=release)
    assert (resumed.ran, resumed.reused, resumed.exit_code) == (1, 1, 0)


def test_hub_batch_is_the_api_function_even_after_its_module_is_imported():
    import hub
    import hub.batching

    assert hub.batch is hub.batching.batch


def test_ray_executor_without_ray_names_the_extra(tmp_path, monkeypatch):
    write_models(tmp_path)
    jobs_file = write_jobs(tmp_path, "jobs:\n  - {model: conv.onnx, to: cpu-int8}\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where Ray is not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'conversion-hub\[ray\]'"):
        batch(jobs_file, output=tmp_path / "release", executor="ray")
