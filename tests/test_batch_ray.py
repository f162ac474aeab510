"""`hub batch --executor ray` on a real local Ray cluster (2 CPUs), and the step cache shared by Ray workers
writing the same entries at once."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import onnx
import pytest

ray = pytest.importorskip("ray")

from hub.api import convert  # noqa: E402
from hub.batching import Journal, batch  # noqa: E402
from cache_race import read_while_written, store_same_entries  # noqa: E402
from onnx_op_models import batch_norm, conv_asymmetric, matmul_gemm  # noqa: E402

pytestmark = pytest.mark.serial  # deadlines of a few seconds: a busy second worker breaks them

MODELS = {"conv": conv_asymmetric, "gemm": matmul_gemm, "norm": batch_norm}
TARGETS = ("onnxruntime-cpu", "cpu-int8")


@pytest.fixture(scope="module")
def cluster():
    # workers inherit the environment of ray.init: the fixture plugin that crashes a job's process on purpose
    previous = os.environ.get("HUB_PLUGINS")
    os.environ["HUB_PLUGINS"] = "hub_misbehaving"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if previous is None:
        os.environ.pop("HUB_PLUGINS")
    else:
        os.environ["HUB_PLUGINS"] = previous


def test_ray_batch_matches_sequential_convert_isolates_failures_and_resumes(cluster, tmp_path):
    for name, build in MODELS.items():
        onnx.save(build()[0], tmp_path / f"{name}.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    (tmp_path / "crash.onnx").write_bytes(b"CRASH now")
    (tmp_path / "jobs.yaml").write_text(f"""\
matrix:
  models: [{', '.join(f'{name}.onnx' for name in MODELS)}]
  targets: [{', '.join(TARGETS)}]
jobs:
  - {{model: broken.onnx, to: cpu-int8}}
  - {{model: crash.onnx, to: onnxruntime-cpu}}
""")
    started = time.perf_counter()
    first = batch(tmp_path / "jobs.yaml", output=tmp_path / "release", executor="ray",
                  cache_dir=tmp_path / "ray-cache")
    first_seconds = time.perf_counter() - started

    by_job = {(o.model, o.target): o for o in first.outcomes}
    assert len(first.outcomes) == 8 and first.ran == 8 and first.exit_code == 5
    assert "not a model in any format" in by_job["broken", "cpu-int8"].reason
    assert by_job["crash", "onnxruntime-cpu"].reason.startswith("the job's process exited with status 7")
    for name in MODELS:
        for target in TARGETS:
            assert by_job[name, target].ok, by_job[name, target].reason
            sequential = convert(tmp_path / f"{name}.onnx", target, output=tmp_path / "sequential" / name / target,
                                 cache_dir=tmp_path / "sequential-cache", threads=1)
            batched = tmp_path / "release" / name / target / sequential.path.name
            assert batched.read_bytes() == sequential.path.read_bytes(), f"{name}/{target} differs"
            assert by_job[name, target].cosine == sequential.report.final.fidelity.cosine
    assert not (tmp_path / "release" / "broken").exists() and not (tmp_path / "release" / "crash").exists()

    started = time.perf_counter()
    second = batch(tmp_path / "jobs.yaml", output=tmp_path / "release", executor="ray",
                   cache_dir=tmp_path / "ray-cache")
    second_seconds = time.perf_counter() - started
    assert (second.ran, second.reused) == (0, 8)
    assert [o.model for o in second.failed] == ["broken", "crash"]
    assert second_seconds < 0.1 * first_seconds, (second_seconds, first_seconds)


def test_interrupting_a_ray_batch_exits_130_keeping_finished_jobs(cluster, tmp_path):
    onnx.save(conv_asymmetric()[0], tmp_path / "conv.onnx")
    (tmp_path / "hang.onnx").write_bytes(b"HANG forever")
    (tmp_path / "jobs.yaml").write_text("jobs:\n  - {model: conv.onnx, to: cpu-int8}\n"
                                        "  - {model: hang.onnx, to: cpu-int8}\n")
    release = tmp_path / "release"
    address = ray.get_runtime_context().gcs_address  # the driver joins the running cluster, as on a real one
    process = subprocess.Popen([sys.executable, "-m", "hub.cli", "batch", str(tmp_path / "jobs.yaml"), "-o",
                                str(release), "--executor", "ray", "--address", address],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((tmp_path / "hang.onnx.started").exists() and Journal(release).finished()):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # what a scheduler sends; handled like Ctrl-C
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert [(o.model, o.status) for o in Journal(release).finished().values()] == [("conv", "ok")]
    assert sorted(p.name for p in release.iterdir()) == [".hub-batch", "conv"]
    assert not (release / ".hub-batch" / "staging").exists()
    time.sleep(2)  # the cancelled task's job process has stopped: nothing runs on the cluster any more
    assert not [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
                .splitlines() if "hub.executors" in line and str(tmp_path) in line]


def test_ray_workers_writing_the_same_cache_entries_all_read_whole_entries(cluster, tmp_path):
    payload = os.urandom(8 << 20)  # large enough that copies overlap in time
    expected = hashlib.sha256(payload).hexdigest()
    keys = [f"{i:064x}" for i in range(3)]
    start_at = time.time() + 3.0
    writer = ray.remote(num_cpus=0.2, max_retries=0)(store_same_entries)
    reader = ray.remote(num_cpus=0.2, max_retries=0)(read_while_written)
    reading = reader.remote(str(tmp_path), keys, start_at + 6.0)
    served = ray.get([writer.remote(str(tmp_path), keys, payload, start_at, worker) for worker in range(6)])
    assert [[digest for digest, _ in per_worker] for per_worker in served] == [[expected] * 3] * 6
    winners = [{per_worker[i][1] for per_worker in served} for i in range(3)]
    assert all(len(winner) == 1 for winner in winners)  # one copy per key won; 5 of 6 lost the rename
    assert ray.get(reading) == {expected}
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == keys
    assert list((tmp_path / "tmp").iterdir()) == []  # every losing copy was removed
