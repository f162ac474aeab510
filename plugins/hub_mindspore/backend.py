"""Running and timing MindIR with MindSpore (mindspore.load + nn.GraphCell). Runs in the hub-managed
"mindspore" environment: imports mindspore, which the hub's own environment need not have."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hub import kit
from hub.errors import UnsupportedModelError, UsageError
from hub_mindspore.model_io import clean_name, read_model

Feed = dict[str, np.ndarray]


def run_samples(model_path: Path, samples: list[Feed], threads: int) -> list[list[np.ndarray]]:
    """The outputs of each batch-1 feed, in the graph's output order (tuples flattened)."""
    cell, names = _open(model_path, threads)
    return [_as_arrays(cell(*_arguments(sample, names))) for sample in samples]


def median_latency_ms(model_path: Path, sample: Feed, threads: int, repeats: int) -> float:
    cell, names = _open(model_path, threads)
    arguments = _arguments(sample, names)
    return kit.median_latency_ms(lambda: _as_arrays(cell(*arguments)), repeats)  # asnumpy() waits for the result


def _open(model_path: Path, threads: int) -> tuple[Any, list[tuple[str, str]]]:
    os.environ.setdefault("GLOG_v", "3")  # MindSpore's own logging: errors only
    import mindspore
    from mindspore import nn

    mindspore.set_context(mode=mindspore.GRAPH_MODE)
    try:
        mindspore.set_num_threads(max(1, int(threads)))
    except (AttributeError, RuntimeError):  # older releases, or already set in this process
        pass
    model_path = _with_mindir_suffix(Path(model_path))
    graph = read_model(model_path).graph
    names = [(clean_name(v.name), _dtype(v)) for v in graph.input]
    try:
        return nn.GraphCell(mindspore.load(str(model_path))), names
    except (RuntimeError, ValueError, TypeError) as error:
        raise UnsupportedModelError(f"MindSpore cannot load {Path(model_path).name}: "
                                    f"{str(error).strip().splitlines()[0] if str(error).strip() else error}",
                                    detail=str(error)) from error


def _with_mindir_suffix(path: Path) -> Path:
    """mindspore.load refuses files whose name does not end in .mindir (cached artifacts may not)."""
    if path.suffix == ".mindir":
        return path
    link = Path(tempfile.mkdtemp(prefix="hub-mindir-")) / "model.mindir"
    link.symlink_to(path.resolve())
    return link


def _dtype(value_info: Any) -> str:
    from hub_mindspore.values import NUMPY_TYPES

    return np.dtype(NUMPY_TYPES.get(value_info.tensor[0].data_type, np.float32)).name


def _arguments(sample: Feed, names: list[tuple[str, str]]) -> list[Any]:
    import mindspore

    if len(names) == 1 and len(sample) == 1:
        sample = {names[0][0]: next(iter(sample.values()))}
    missing = [name for name, _ in names if name not in sample]
    if missing:
        raise UsageError(f"the sample has no array for model input(s) {', '.join(missing)}; "
                         f"it holds {', '.join(sorted(sample)) or 'nothing'}")
    return [mindspore.Tensor(np.ascontiguousarray(sample[name], dtype=dtype)) for name, dtype in names]


def _as_arrays(result: Any) -> list[np.ndarray]:
    if isinstance(result, (tuple, list)):
        return [array for item in result for array in _as_arrays(item)]
    return [result.asnumpy()]
