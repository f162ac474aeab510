"""Reading, detecting and describing MindIR files without MindSpore (our wire description only)."""
from __future__ import annotations

import re
from pathlib import Path

from hub.errors import UnsupportedModelError
from hub.states import ModelInfo, TensorSpec

MAX_BYTES = 2 << 30  # protobuf's own limit for one message
HEAD_BYTES = 256
# ModelProto's leading string fields (ir_version, producer_name, producer_version, domain, model_version) as
# MindSpore writes them: field number << 3 | wire type 2 (length-delimited)
LEADING_TAGS = {0x0A, 0x12, 0x1A, 0x22, 0x2A}


def detect(path: Path) -> bool:
    """A .mindir file whose first bytes are ModelProto's leading string fields. Cheap; never raises."""
    try:
        if path.suffix.lower() != ".mindir" or not path.is_file():
            return False
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return False
    return len(head) > 2 and head[0] in LEADING_TAGS and head[1] < 0x80 and head[1] + 2 <= len(head)


def clean_name(name: str) -> str:
    """MindIR names carry the graph's name and counters ("12_main_construct_3:x"); keep the readable part."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name.rsplit(":", 1)[-1] if ":" in name else name) or "value"


def read_model(path: Path):  # -> wire.ModelProto
    from google.protobuf.message import DecodeError

    from hub_mindspore.wire import ModelProto

    size = path.stat().st_size
    if size > MAX_BYTES:
        raise UnsupportedModelError(f"{path} is {size / 1e9:.1f} GB: MindIR files over 2 GB keep their weights "
                                    "apart, which the hub does not read")
    model = ModelProto()
    try:
        model.ParseFromString(path.read_bytes())
    except (DecodeError, RecursionError, ValueError) as error:
        raise UnsupportedModelError(f"{path} is not a readable MindIR file ({error}); export it again with "
                                    "mindspore.export(..., file_format='MINDIR')") from error
    if not model.HasField("graph") or not len(model.graph.node):
        raise UnsupportedModelError(f"{path} holds no MindIR graph; export it again with "
                                    "mindspore.export(..., file_format='MINDIR')")
    if any(p.HasField("external_data") for p in model.graph.parameter):
        raise UnsupportedModelError(f"{path} keeps its weights in external files, which the hub does not read")
    return model


def describe(path: Path, options: dict) -> ModelInfo:
    from hub_mindspore.to_onnx import unsupported_operators
    from hub_mindspore.values import NUMPY_TYPES

    model = read_model(path)
    graph = model.graph
    inputs = tuple(TensorSpec(clean_name(v.name), tuple(v.tensor[0].dims),
                              str(NUMPY_TYPES.get(v.tensor[0].data_type, "float32").__name__))
                   for v in graph.input)
    outputs = tuple(TensorSpec(f"output_{i}" if len(graph.output) > 1 else "output", tuple(v.tensor[0].dims),
                               str(NUMPY_TYPES.get(v.tensor[0].data_type, "float32").__name__))
                    for i, v in enumerate(graph.output) if len(v.tensor) == 1)
    parameters = sum(int(_product(p.dims)) for p in graph.parameter)
    notes = [f"written by {model.producer_name} {model.model_version}, MindIR version {model.mind_ir_version}"]
    missing = unsupported_operators(model)
    if missing:
        notes.append(f"operators without an ONNX translation: {', '.join(missing)}")
    return ModelInfo(format="mindir", inputs=inputs, outputs=outputs, parameters=parameters, notes=tuple(notes))


def _product(dims) -> int:
    result = 1
    for d in dims:
        result *= d
    return result
