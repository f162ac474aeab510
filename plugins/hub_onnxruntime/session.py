"""Running and timing ONNX models with ONNX Runtime on the CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hub import kit
from hub.errors import UnsupportedModelError, UsageError

Feed = dict[str, np.ndarray]
# ONNX Runtime names input types "tensor(<onnx type>)"; these are the numpy dtypes a feed is cast to.
ORT_TO_NUMPY = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_, "tensor(string)": np.str_,
}


def run_samples(model_path: Path, samples: list[Feed], threads: int) -> list[list[np.ndarray]]:
    """The outputs of each batch-1 feed in `samples`, in the model's output order, from one session."""
    session = open_session(model_path, threads)
    return [list(session.run(None, session_feed(session, sample))) for sample in samples]


def output_names(model_path: Path) -> list[str]:
    """The model's output names, in the order run_samples returns the outputs."""
    return [output.name for output in open_session(model_path, 1).get_outputs()]


def median_latency_ms(model_path: Path, sample: Feed, threads: int, repeats: int) -> float:
    """Median milliseconds of one inference on `sample`, after warm-up runs that are not counted."""
    session = open_session(model_path, threads)
    feed = session_feed(session, sample)
    return kit.median_latency_ms(lambda: session.run(None, feed), repeats)


def open_session(model_path: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise UnsupportedModelError(f"ONNX Runtime cannot load {Path(model_path).name}",
                                    detail=str(error)) from error


def session_feed(session: Any, sample: Feed) -> Feed:
    """`sample` keyed and cast the way the session wants; one unnamed array feeds a one-input model."""
    inputs = session.get_inputs()
    if len(inputs) == 1 and len(sample) == 1:
        sample = {inputs[0].name: next(iter(sample.values()))}
    missing = [i.name for i in inputs if i.name not in sample]
    if missing:
        raise UsageError(f"the sample has no array for model input(s) {', '.join(missing)}; "
                         f"it holds {', '.join(sorted(sample)) or 'nothing'}")
    return {i.name: np.asarray(sample[i.name], dtype=ORT_TO_NUMPY.get(i.type)) for i in inputs}
