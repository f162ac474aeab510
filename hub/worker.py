"""Isolated execution: every step, description and model run happens in a fresh worker process.

The parent writes a job file and starts `python -m hub.worker JOB`; the child imports the plugin function by
its "module:function" reference, runs it, and writes a result file. Frameworks that exit, crash, leak
environment variables or hold memory cannot take the hub down with them, and a timeout kills the whole
process group. Arrays cross the boundary as .npz files, everything else as JSON.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hub import errors
from hub.errors import HubError, MissingDependencyError, StepFailedError
from hub.verify import Outputs

STDERR_TAIL_CHARS = 4000
WATCH_INTERVAL = 0.2


class WorkerCrashed(StepFailedError):
    """The worker process died (a signal, an exit without a result) or ran past its timeout."""


def resolve(reference: str) -> Callable[..., Any]:
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise MissingDependencyError(
            f"cannot import {error.name!r} needed by {reference}: install the plugin's extra "
            "(see `hub plugins`)", detail=str(error)) from error
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


# ---- child side -----------------------------------------------------------------------------------------

def _run_step(ref: str, context: dict) -> dict:
    from hub.declarations import StepContext
    from hub.states import TensorSpec

    ctx = StepContext(
        input_path=Path(context["input_path"]),
        workdir=Path(context["workdir"]),
        options=dict(context["options"]),
        inputs=tuple(TensorSpec.from_json(t) for t in context["inputs"]),
        calibration=Path(context["calibration"]) if context.get("calibration") else None,
    )
    output = Path(resolve(ref)(ctx))
    return {"path": str(output), "notes": ctx.notes}


def _describe(ref: str, path: str, options: dict) -> dict:
    return resolve(ref)(Path(path), options).to_json()


def _run_model(ref: str, model_path: str, samples_path: str, outputs_path: str, threads: int,
               options: dict | None = None, names_ref: str | None = None) -> dict:
    samples = load_samples(Path(samples_path))
    outputs = _with_options(resolve(ref), options)(Path(model_path), samples, threads)
    names = [str(name) for name in resolve(names_ref)(Path(model_path))] if names_ref else []
    save_outputs(Path(outputs_path), outputs, names)
    return {"samples": len(outputs)}


def _latency(ref: str, model_path: str, samples_path: str, threads: int, repeats: int,
             options: dict | None = None) -> float:
    sample = load_samples(Path(samples_path))[0]
    return float(_with_options(resolve(ref), options)(Path(model_path), sample, threads, repeats))


def _with_options(function: Callable[..., Any], options: dict | None) -> Callable[..., Any]:
    """Backends may take the run's model options (custom objects, trust flags) as an `options` keyword."""
    import functools
    import inspect

    if options and "options" in inspect.signature(function).parameters:
        return functools.partial(function, options=options)
    return function


JOBS: dict[str, Callable[..., Any]] = {
    "step": _run_step, "describe": _describe, "run_model": _run_model, "latency": _latency,
}


class NetworkRefused(ConnectionRefusedError):
    """Raised inside a worker that tries to reach the network."""


def deny_network() -> None:
    """Conversions are offline: a library that reaches for the internet (onnx2tf fetches sample data, hubs
    fetch weights) fails at once with a clear reason instead of hanging or depending on what it downloads.
    Local (AF_UNIX) sockets still work. Set HUB_ALLOW_NETWORK=1 to lift this."""
    import socket

    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guarded(original: Callable[..., Any]) -> Callable[..., Any]:
        def connect(self: socket.socket, address: Any) -> Any:
            if self.family == socket.AF_UNIX:
                return original(self, address)
            print(f"hub: refused a network connection to {address!r}", file=sys.stderr)
            raise NetworkRefused(f"conversion-hub workers do not use the network (tried {address!r}); "
                                 "set HUB_ALLOW_NETWORK=1 to allow it")
        return connect

    def no_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        print(f"hub: refused a name lookup of {host!r}", file=sys.stderr)
        raise NetworkRefused(f"conversion-hub workers do not use the network (looked up {host!r})")

    socket.socket.connect = guarded(original_connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded(original_connect_ex)  # type: ignore[method-assign]
    socket.getaddrinfo = no_lookup  # type: ignore[assignment]


def _child_main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    if os.environ.get("HUB_ALLOW_NETWORK") != "1":
        deny_network()
    try:
        outcome = {"ok": True, "value": JOBS[job["kind"]](**job["args"])}
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: a library's exit is a failure
        outcome = {
            "ok": False,
            "error_class": type(error).__name__ if isinstance(error, HubError) else None,
            "message": getattr(error, "message", None) or f"{type(error).__name__}: {error}",
            "detail": traceback.format_exc(),
        }
    Path(job["result"]).write_text(json.dumps(outcome, default=str))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: some frameworks hang or crash in their atexit handlers


# ---- arrays across the boundary --------------------------------------------------------------------------

def save_samples(path: Path, samples: list[dict[str, np.ndarray]]) -> None:
    arrays = {f"{i}/{name}": value for i, sample in enumerate(samples) for name, value in sample.items()}
    np.savez(path, **arrays)


def load_samples(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        samples: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            index, _, name = key.partition("/")
            samples.setdefault(int(index), {})[name] = data[key]
    return [samples[i] for i in sorted(samples)]


OUTPUT_NAMES_KEY = "names"


def save_outputs(path: Path, outputs: list[list[np.ndarray]], names: list[str] | None = None) -> None:
    """Outputs per sample, and the outputs' names where the backend knows them ("" for an unknown one)."""
    arrays = {f"{i}/{j}": _portable(o) for i, sample in enumerate(outputs) for j, o in enumerate(sample)}
    if names:
        arrays[OUTPUT_NAMES_KEY] = np.array(names, dtype=np.str_)
    np.savez(path, **arrays)


def _portable(value: object) -> np.ndarray:
    """An output as an array numpy reads back anywhere: extension floats (bfloat16, float8 from ml_dtypes) are
    saved as float32, since an .npz stores them as opaque bytes that nothing can cast back; strings (ONNX
    Runtime gives them as objects, which an .npz pickles) as unicode."""
    array = np.asarray(value)
    if array.dtype.kind == "O":
        return array.astype(np.str_)
    return array.astype(np.float32) if array.dtype.kind == "V" and array.dtype.itemsize <= 4 else array


def load_outputs(path: Path) -> list[list[np.ndarray]]:
    return load_named_outputs(path).samples


def load_named_outputs(path: Path) -> Outputs:
    by_sample: dict[int, dict[int, np.ndarray]] = {}
    names: tuple[str | None, ...] = ()
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            if key == OUTPUT_NAMES_KEY:
                names = tuple(str(name) or None for name in data[key])
                continue
            i, j = (int(part) for part in key.split("/"))
            by_sample.setdefault(i, {})[j] = data[key]
    return Outputs([[by_sample[i][j] for j in sorted(by_sample[i])] for i in sorted(by_sample)], names)


# ---- parent side -----------------------------------------------------------------------------------------

def call_worker(kind: str, args: dict, timeout: float | None, cwd: Path | None = None,
                python: str | None = None, memory_limit_mb: float | None = None) -> Any:
    """Run one job in a fresh process and return its value, or raise the error it ended with.

    timeout: seconds before the worker's process group is killed. memory_limit_mb: resident memory of the
    worker and its children (default $HUB_MEMORY_LIMIT_MB, else unlimited) above which it is killed.
    """
    if memory_limit_mb is None and os.environ.get("HUB_MEMORY_LIMIT_MB"):
        memory_limit_mb = float(os.environ["HUB_MEMORY_LIMIT_MB"])
    with tempfile.TemporaryDirectory(prefix="hub-job-") as scratch:
        job_path, result_path, log_path = (Path(scratch) / n for n in ("job.json", "result.json", "stderr.log"))
        job_path.write_text(json.dumps({"kind": kind, "args": args, "result": str(result_path)}))
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [python or sys.executable, "-m", "hub.worker", str(job_path)],
                cwd=cwd or scratch, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=_worker_environment(own_interpreter=python is None),
            )
            try:
                returncode = _watch(process, timeout, memory_limit_mb)
            except WorkerCrashed as crash:
                _kill_group(process)
                raise WorkerCrashed(crash.message, detail=_tail(log_path)) from None
            except BaseException:  # Ctrl-C included: never leave a worker behind
                _kill_group(process)
                raise
        return _outcome(result_path, returncode, log_path)


def _worker_environment(own_interpreter: bool) -> dict[str, str]:
    environment = dict(os.environ)
    if own_interpreter:
        # the worker must import the same hub and plugins as the parent, even when they are not installed
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [*sys.path[1:], environment.get("PYTHONPATH")]))
    else:
        # another environment's interpreter (hub.environments) must not see this one's packages; the hub and its
        # plugins are linked into it
        environment.pop("PYTHONPATH", None)
    environment.setdefault("PYTHONHASHSEED", "0")
    return environment


def _watch(process: subprocess.Popen, timeout: float | None, memory_limit_mb: float | None) -> int:
    """Wait for the worker, enforcing the timeout and the memory limit; returns its exit status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise WorkerCrashed(f"timed out after {timeout:.0f} s")
        try:
            return process.wait(timeout=min(WATCH_INTERVAL, remaining) if remaining is not None else WATCH_INTERVAL)
        except subprocess.TimeoutExpired:
            pass
        if memory_limit_mb is not None:
            used = _group_rss_mb(process.pid)
            if used > memory_limit_mb:
                raise WorkerCrashed(f"used {used:.0f} MB, over the memory limit of {memory_limit_mb:.0f} MB "
                                    "(raise it with --memory-limit)")


def _group_rss_mb(group: int) -> float:
    """Resident memory of every process in a process group, from /proc (Linux); 0 where unreadable."""
    total_pages = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:  # field 5 of stat, the process group id
                total_pages += int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total_pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-STDERR_TAIL_CHARS:]


def _outcome(result_path: Path, returncode: int, log_path: Path) -> Any:
    if not result_path.exists():
        if returncode < 0:
            reason = f"the worker was killed by {signal.Signals(-returncode).name}"
        else:
            reason = f"the worker exited with status {returncode} before finishing"
        raise WorkerCrashed(reason, detail=_tail(log_path))
    outcome = json.loads(result_path.read_text())
    if outcome["ok"]:
        return outcome["value"]
    error_class = getattr(errors, outcome["error_class"] or "", None)
    if not (isinstance(error_class, type) and issubclass(error_class, HubError)):
        error_class = StepFailedError
    raise error_class(outcome["message"], detail=outcome["detail"] + "\n" + _tail(log_path))


if __name__ == "__main__":
    _child_main(sys.argv[1])
