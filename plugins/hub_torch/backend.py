"""The "torch" backend: runs torch.export archives and TorchScript files in eager PyTorch on the CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hub import kit
from hub.errors import UnsupportedModelError
from hub_torch.describe import load_torchscript, torchscript_input_names
from hub_torch.detect import is_torch_export, is_torchscript
from hub_torch.tensors import call_program, feed_tensors, load_program, program_input_names, tensors_to_numpy

Inference = Callable[[dict[str, np.ndarray]], Any]
WARM_UP_RUNS = 3


def run(model_path: Path, samples: list[dict[str, np.ndarray]], threads: int) -> list[list[np.ndarray]]:
    """One list of output arrays (nested outputs flattened) per batch-1 sample."""
    import torch

    torch.set_num_threads(threads)
    infer = load_inference(Path(model_path))
    with torch.no_grad():
        return [tensors_to_numpy(infer(sample)) for sample in samples]


def latency(model_path: Path, sample: dict[str, np.ndarray], threads: int, repeats: int) -> float:
    """Median milliseconds of one inference, measured after warm-up runs."""
    import torch

    torch.set_num_threads(threads)
    infer = load_inference(Path(model_path))
    with torch.no_grad():
        return kit.median_latency_ms(lambda: infer(sample), repeats, warmup=WARM_UP_RUNS)


def load_inference(model_path: Path) -> Inference:
    """A function running the model on one sample keyed by input name."""
    if is_torch_export(model_path):
        program = load_program(model_path)
        module = program.module()
        names: Sequence[str] = program_input_names(program)
        return lambda sample: call_program(program, module, feed_tensors(sample, names))
    if is_torchscript(model_path):
        script = load_torchscript(model_path)
        script.eval()
        names = torchscript_input_names(script)
        return lambda sample: script(*feed_tensors(sample, names))
    raise UnsupportedModelError(f"{model_path} is neither a torch.export archive nor a TorchScript file")
