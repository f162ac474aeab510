"""Running and timing a .tflite on the emulated arm64 platform (prepared first when it is not yet).

Each call starts the aarch64 Python under qemu on runner.py, with the samples in an .npz and the outputs read
back from one: about 2 s to start (numpy and the interpreter import under emulation), then the inferences.
"""
from __future__ import annotations

import importlib.util
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from hub import kit
from hub.errors import MissingDependencyError, StepFailedError, UsageError
from hub_litert_arm64.setup import Platform, load_platform

RUNNER = Path(__file__).with_name("runner.py")
# runner.py's exit status and message prefix when a sample's arrays do not match the model's inputs
INPUT_MISMATCH_EXIT = 3
INPUT_MISMATCH_PREFIX = "input mismatch: "
STDERR_TAIL_CHARS = 4000

Feed = dict[str, np.ndarray]


def run(model_path: Path, samples: list[Feed], threads: int) -> list[list[np.ndarray]]:
    """The outputs (dequantized as by the litert backend) of each batch-1 feed, computed on the emulated CPU."""
    with tempfile.TemporaryDirectory(prefix="hub-arm64-") as scratch:
        outputs = _run_runner(Path(model_path), samples, threads, Path(scratch), repeats=None)
    count = {}
    for key in outputs:
        index, _, output = key.partition("/")
        count[int(index)] = max(count.get(int(index), 0), int(output) + 1)
    return [[outputs[f"{i}/{k}"] for k in range(count.get(i, 0))] for i in range(len(samples))]


def latency(model_path: Path, sample: Feed, threads: int, repeats: int) -> float:
    """Median milliseconds of one inference, feeding included, timed inside the emulated process (after warm-up
    runs). Emulated time: it says how the model runs under qemu on this host, not on an ARM device."""
    with tempfile.TemporaryDirectory(prefix="hub-arm64-") as scratch:
        outputs = _run_runner(Path(model_path), [sample], threads, Path(scratch), repeats=repeats)
    return float(outputs["median_ms"])


def _run_runner(model_path: Path, samples: list[Feed], threads: int, scratch: Path,
                repeats: int | None) -> dict[str, np.ndarray]:
    platform = load_platform()
    samples_path, outputs_path = scratch / "samples.npz", scratch / "outputs.npz"
    np.savez(samples_path, **{f"{i}/{name}": np.asarray(array)
                              for i, sample in enumerate(samples) for name, array in sample.items()})
    arguments = [str(RUNNER), str(_feeding_module()), kit.__file__, str(Path(model_path).resolve()),
                 str(int(threads)), str(samples_path), str(outputs_path)]
    if repeats is not None:
        arguments.append(str(int(repeats)))
    # run in the scratch folder: a core file qemu may write for a crashed process goes away with it
    completed = subprocess.run(platform.python_command(*arguments), env=platform.environment(), cwd=scratch,
                               capture_output=True, text=True)
    if completed.returncode == INPUT_MISMATCH_EXIT:
        message = completed.stderr.rpartition(INPUT_MISMATCH_PREFIX)[2].strip()
        raise UsageError(message or "the samples do not match the TFLite model's inputs")
    if completed.returncode != 0 or not outputs_path.is_file():
        raise StepFailedError(_failure(model_path, completed.returncode, platform),
                              detail=completed.stderr[-STDERR_TAIL_CHARS:])
    with np.load(outputs_path) as archive:
        return {key: archive[key] for key in archive.files}


def _failure(model_path: Path, returncode: int, platform: Platform) -> str:
    reason = f"exit status {returncode}" if returncode >= 0 else f"signal {-returncode}"
    if returncode in (128 + 4, 128 + 11, -4, -11):  # qemu exits with 128+N after "uncaught target signal N"
        reason += " (the emulated process crashed: SIGILL or SIGSEGV)"
    return (f"the aarch64 LiteRT interpreter failed on {Path(model_path).name} under {platform.qemu.name} "
            f"-cpu {platform.cpu}: {reason}")


def _feeding_module() -> Path:
    """hub_litert/feeding.py, the file the x86 backend feeds and reads tensors with (found, not imported)."""
    spec = importlib.util.find_spec("hub_litert.feeding")
    if spec is None or not spec.origin:
        raise MissingDependencyError("the litert-arm64 backend needs the hub_litert plugin (hub_litert/feeding.py)")
    return Path(spec.origin)
