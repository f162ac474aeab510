"""Where batch jobs run: a pool of local processes, or Ray tasks. Either way a job is one `hub.api.convert`
call in a process of its own (`python -m hub.executors REQUEST`), so a crash, a timeout or Ctrl-C ends that
process and nothing else; its output is written to a staging folder and renamed into OUT/<model>/<target>/ only
when the conversion succeeded. Ray is imported only inside the Ray executor.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from hub.batching import STATE_FOLDER, BatchProgress, BatchSettings, Job, JobOutcome
from hub.errors import HubError, MissingDependencyError

POLL_SECONDS = 0.3
STOP_GRACE_SECONDS = 15.0   # after Ctrl-C or a timeout, how long a job may clean up before it is killed


def executor_for(settings: BatchSettings) -> "LocalExecutor | RayExecutor":
    return RayExecutor(settings) if settings.executor == "ray" else LocalExecutor(settings)


# ---- one job in its own process --------------------------------------------------------------------------

class JobProcess:
    """Runs one job in a child process of its own session, enforcing the job's timeout; stop() asks it to clean
    up (SIGINT: the conversion kills its step workers and removes its scratch) and kills it after a grace."""

    def __init__(self, job: Job, output: Path, cache: Path) -> None:
        self.job = job
        self.output = output
        self.cache = cache
        self.staging = output / STATE_FOLDER / "staging" / f"{job.name}--{job.to}-{uuid.uuid4().hex[:8]}"
        self.progress_path = progress_path(output, job)
        self.process: subprocess.Popen | None = None
        self.stopped = False

    def run(self) -> JobOutcome:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="hub-batch-job-") as scratch:
            request, result, log = (Path(scratch) / n for n in ("request.json", "result.json", "log.txt"))
            request.write_text(json.dumps({"job": self.job.to_json(), "output": str(self.output),
                                           "cache": str(self.cache), "staging": str(self.staging),
                                           "progress": str(self.progress_path), "result": str(result)}))
            try:
                with open(log, "wb") as log_handle:
                    self.process = subprocess.Popen(
                        [sys.executable, "-m", "hub.executors", str(request)], stdin=subprocess.DEVNULL,
                        stdout=log_handle, stderr=subprocess.STDOUT, start_new_session=True,
                        env=_child_environment())
                    if self.stopped:  # stopped while it was starting
                        self.stop()
                    try:
                        self.process.wait(timeout=self.job.job_timeout)
                    except subprocess.TimeoutExpired:
                        self.stop()
                        return JobOutcome.failure(self.job, f"timed out after {self.job.job_timeout:g} s "
                                                  "(job_timeout)", seconds=time.perf_counter() - started)
                    except BaseException:
                        self.stop()
                        raise
                return self._outcome(result, log, time.perf_counter() - started)
            finally:
                shutil.rmtree(self.staging, ignore_errors=True)
                self.progress_path.unlink(missing_ok=True)

    def stop(self) -> None:
        self.stopped = True
        process = self.process
        if process is None or process.poll() is not None:
            return
        _signal_group(process, signal.SIGINT)
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()

    def _outcome(self, result: Path, log: Path, seconds: float) -> JobOutcome:
        if result.exists():
            return replace(JobOutcome.from_json(json.loads(result.read_text())), seconds=seconds)
        code = self.process.returncode if self.process else None
        if code is not None and code < 0:
            reason = f"the job's process was killed by {signal.Signals(-code).name}"
        else:
            reason = f"the job's process exited with status {code} before finishing"
        last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        return JobOutcome.failure(self.job, reason + (f" ({last[0].strip()[:200]})" if last else ""),
                                  seconds=seconds)


def _signal_group(process: subprocess.Popen, number: int) -> None:
    try:
        os.killpg(process.pid, number)
    except ProcessLookupError:
        pass


def _child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    # the child must import the same hub and plugins as this process, even when they are not installed
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [*sys.path[1:], environment.get("PYTHONPATH")]))
    return environment


def progress_path(output: Path, job: Job) -> Path:
    return output / STATE_FOLDER / "running" / f"{job.name}--{job.to}.step"


def run_job(job: Job, output: Path, cache: Path, staging: Path, progress_file: Path) -> JobOutcome:
    """The job itself (in its own process): convert into `staging`, then rename it into OUT/<model>/<target>/."""
    from hub import api

    started = time.perf_counter()
    progress = FileProgress(progress_file)
    progress.show("starting")
    try:
        result = api.convert(job.model, job.to, output=staging, cache_dir=cache, progress=progress,
                             **job.convert_arguments())
    except HubError as error:
        return JobOutcome.failure(job, error.message, error.exit_code, time.perf_counter() - started)
    except Exception as error:  # a bug in the hub or a plugin: this job fails, the batch goes on
        return JobOutcome.failure(job, f"internal error: {type(error).__name__}: {error}", 1,
                                  time.perf_counter() - started)
    destination = output / job.name / job.to
    report, final = result.report, result.report.final
    assert result.path is not None and final is not None
    report.final = replace(final, path=str(destination / result.path.name))
    from hub.html_report import render_html
    from hub.runner import write_text_atomically

    write_text_atomically(report.dumps(), staging / "report.json")
    write_text_atomically(render_html(report.to_json()), staging / "report.html")
    move_into_place(staging, destination)
    fidelity = final.fidelity
    return JobOutcome(job.name, job.to, "ok", seconds=time.perf_counter() - started, bytes=final.bytes,
                      latency_ms=final.latency_ms, cosine=fidelity.cosine if fidelity else None,
                      top1_agreement=fidelity.top1_agreement if fidelity else None, route=tuple(report.route),
                      output=report.final.path, report=str(destination / "report.html"))


def move_into_place(staging: Path, destination: Path) -> None:
    """Rename a finished job's folder over the previous one (renames on one filesystem are atomic)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if not destination.exists():
        os.rename(staging, destination)
        return
    previous = destination.with_name(f".{destination.name}.previous-{uuid.uuid4().hex[:8]}")
    os.rename(destination, previous)
    os.rename(staging, destination)
    shutil.rmtree(previous, ignore_errors=True)


class FileProgress:
    """Writes the running step's name to a small file the batch's driver polls (on any node of a cluster)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def show(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
        partial.write_text(text)
        os.replace(partial, self.path)

    def route_started(self, route: Any, attempt: int) -> None:
        if attempt > 1:
            self.show(f"fallback route {attempt}")

    def step_started(self, planned: Any) -> None:
        self.show(planned.name)

    def step_finished(self, record: Any) -> None: ...

    def route_failed(self, failure: Any) -> None:
        self.show(f"{failure.step} failed")

    def measuring(self, what: str) -> None:
        self.show(f"measuring {what}")


def _child_main(request_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    job = Job.from_json(request["job"])
    try:
        outcome = run_job(job, Path(request["output"]), Path(request["cache"]), Path(request["staging"]),
                          Path(request["progress"]))
    except KeyboardInterrupt:
        sys.exit(130)
    result = Path(request["result"])
    partial = result.with_name(f".{result.name}.partial")
    partial.write_text(json.dumps(outcome.to_json()))
    os.replace(partial, result)


class _RunningView:
    """Turns the progress files of running jobs into job_started / job_step calls."""

    def __init__(self, output: Path, jobs: list[Job], progress: BatchProgress) -> None:
        self.paths = {progress_path(output, job): job for job in jobs}
        self.shown: dict[Path, str] = {}
        self.progress = progress

    def poll(self) -> None:
        for path, job in self.paths.items():
            try:
                text = path.read_text()
            except OSError:
                continue
            if path not in self.shown:
                self.progress.job_started(job)
            if self.shown.get(path) != text:
                self.shown[path] = text
                self.progress.job_step(job, text)

    def finished(self, job: Job) -> None:
        for path in [p for p, j in self.paths.items() if j is job]:
            if path not in self.shown:  # it ran between two polls
                self.progress.job_started(job)
            self.paths.pop(path)
            self.shown.pop(path, None)


# ---- executors -------------------------------------------------------------------------------------------

def _available_memory_mb() -> float:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError):
        return float("inf")


def default_workers(jobs: list[Job]) -> int:
    """As many jobs at once as the cores (each job's threads) and the free memory (each job's declared
    memory) allow, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(job.threads for job in jobs)
    memory = max(job.memory_mb() for job in jobs)
    return max(1, min(cores // threads, int(_available_memory_mb() // memory), len(jobs)))


class LocalExecutor:
    """Up to `workers` jobs at once, each in its own process on this machine."""

    def __init__(self, settings: BatchSettings) -> None:
        self.settings = settings

    def workers(self, jobs: list[Job]) -> int:
        return min(self.settings.workers or default_workers(jobs), len(jobs))

    def run(self, jobs: list[Job], progress: BatchProgress) -> Iterator[tuple[Job, JobOutcome]]:
        running: dict[Future, JobProcess] = {}
        lock = threading.Lock()
        interrupted = threading.Event()
        view = _RunningView(self.settings.output, jobs, progress)

        def run_one(process: JobProcess) -> JobOutcome:
            if interrupted.is_set():
                raise KeyboardInterrupt
            return process.run()

        pool = ThreadPoolExecutor(max_workers=self.workers(jobs), thread_name_prefix="hub-batch")
        try:
            with lock:
                for job in jobs:
                    process = JobProcess(job, self.settings.output, self.settings.cache)
                    running[pool.submit(run_one, process)] = process
            while running:
                done, _ = wait(list(running), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                view.poll()
                for future in done:
                    process = running.pop(future)
                    view.finished(process.job)
                    outcome = future.result()
                    progress.job_finished(process.job, outcome)
                    yield process.job, outcome
        except BaseException:
            interrupted.set()
            for future in running:
                future.cancel()
            for process in running.values():
                process.stop()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Each job is a Ray task declaring its CPUs (the job's threads) and memory, on the cluster at `address`
    (or a local one); the task runs the job in a process of its own, like the local executor."""

    def __init__(self, settings: BatchSettings) -> None:
        self.settings = settings
        try:
            import ray
        except ImportError:
            raise MissingDependencyError("--executor ray needs Ray, which is not installed: "
                                         "pip install 'conversion-hub[ray]'") from None
        self.ray = ray

    def workers(self, jobs: list[Job]) -> int:
        self._connect()
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        return max(1, min(cpus // max(job.threads for job in jobs), len(jobs)))

    def _connect(self) -> None:
        if self.ray.is_initialized():
            return
        # the workers find the same plugins, environments and hub code as this process
        variables = {k: v for k, v in os.environ.items() if k.startswith("HUB_") or k == "PYTHONPATH"}
        on_terminate = signal.getsignal(signal.SIGTERM)
        self.ray.init(address=self.settings.address, runtime_env={"env_vars": variables},
                      include_dashboard=False, log_to_driver=False)
        self.connected_here = True
        if callable(on_terminate) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_terminate)  # ray.init installs one that aborts: keep the clean stop

    def run(self, jobs: list[Job], progress: BatchProgress) -> Iterator[tuple[Job, JobOutcome]]:
        self._connect()
        ray = self.ray
        task = ray.remote(max_retries=0)(_ray_job)
        by_ref = {}
        for job in jobs:
            options = {"num_cpus": job.threads, "memory": int(job.memory_mb() * 2**20),
                       "name": f"hub {job.id}"}
            ref = task.options(**options).remote(job.to_json(), str(self.settings.output), str(self.settings.cache))
            by_ref[ref] = job
        view = _RunningView(self.settings.output, jobs, progress)
        try:
            while by_ref:
                ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=POLL_SECONDS)
                view.poll()
                for ref in ready:
                    job = by_ref.pop(ref)
                    view.finished(job)
                    try:
                        outcome = JobOutcome.from_json(ray.get(ref))
                    except Exception as error:  # the task's worker died, or Ray could not run it
                        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
                        outcome = JobOutcome.failure(job, f"the Ray task failed: {type(error).__name__}: "
                                                     f"{first_line}")
                    progress.job_finished(job, outcome)
                    yield job, outcome
        except BaseException:
            for ref in by_ref:
                ray.cancel(ref)  # raises KeyboardInterrupt inside a running task: it stops its job process
            ray.wait(list(by_ref), num_returns=len(by_ref), timeout=STOP_GRACE_SECONDS + 5)
            raise
        finally:
            if getattr(self, "connected_here", False):
                ray.shutdown()


def _ray_job(job: dict, output: str, cache: str) -> dict:
    """The Ray task: one job in a process of its own (a crash there fails this job only)."""
    process = JobProcess(Job.from_json(job), Path(output), Path(cache))
    return process.run().to_json()


if __name__ == "__main__":
    _child_main(sys.argv[1])
