"""In-memory models: what the Python API calls when it is handed an nn.Module instead of a file."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch


def save_module(
    module: "torch.nn.Module", example_inputs: Sequence["torch.Tensor | np.ndarray"], path: Path
) -> list[str]:
    """torch.export `module` (in eval mode) on `example_inputs`, save it to `path` (.pt2), return its input names.

    The program keeps the example shapes: inputs of another shape are rejected when it runs.
    """
    import torch

    example = tuple(torch.from_numpy(value) if isinstance(value, np.ndarray) else value for value in example_inputs)
    was_training = module.training
    try:
        program = torch.export.export(module.eval(), example)
    finally:
        module.train(was_training)  # the caller's module keeps its mode
    torch.export.save(program, str(path))
    return list(program.graph_signature.user_inputs)
