"""MindSpore's MindIR as a first-class format: detection and description, ONNX <-> MindIR translators in pure
Python (our own description of the wire format, any protobuf >= 4), and a MindSpore backend.

MindSpore wants numpy < 2, so its backend runs in a hub-managed environment ("mindspore", made once by
`hub env create mindspore`); the translators run in the hub's own environment. Declarations only: behaviour
lives in hub_mindspore.model_io, .from_onnx, .to_onnx and .backend.
"""
from __future__ import annotations

from hub.declarations import Backend, Environment, Format, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

TRANSLATOR_REQUIRES = ("onnx>=1.16", "protobuf>=4")
ENVIRONMENT = "mindspore"


@hookimpl
def hub_environments() -> list[Environment]:
    return [Environment(
        name=ENVIRONMENT,
        requirements=("mindspore==2.10.*", "numpy<2"),
        description="MindSpore 2.10 (CPU) with numpy 1.x, which it needs to run cleanly",
    )]


@hookimpl
def hub_formats() -> list[Format]:
    return [Format(
        name="mindir",
        detect="hub_mindspore.model_io:detect",
        describe="hub_mindspore.model_io:describe",
        extensions=(".mindir",),
        description="MindSpore MindIR (protobuf), as written by mindspore.export(..., file_format='MINDIR')",
        requires=TRANSLATOR_REQUIRES,
        extra="onnx",
    )]


@hookimpl
def hub_converters() -> list[Step]:
    return [
        Step(
            name="onnx-to-mindir",
            accepts=Requirement.of(format="onnx", precision="fp32"),
            produces={"format": "mindir"},
            run="hub_mindspore.steps:onnx_to_mindir",
            description="ONNX -> MindIR in pure Python: each ONNX operator becomes the MindSpore primitives "
                        "MindSpore writes for the same layer (static shapes; settings folded to constants)",
            seconds=2.0,
            seconds_per_mb=0.05,
            requires=TRANSLATOR_REQUIRES,
            extra="onnx",
        ),
        Step(
            name="mindir-to-onnx",
            accepts=Requirement.of(format="mindir", precision="fp32"),
            produces={"format": "onnx", "graph": "raw"},
            run="hub_mindspore.steps:mindir_to_onnx",
            description="MindIR -> ONNX (opset 17) in pure Python, read with our own description of the "
                        "format (padding order, BiasAdd, BatchNorm tuples and plumbing nodes handled)",
            seconds=2.0,
            seconds_per_mb=0.05,
            requires=TRANSLATOR_REQUIRES,
            extra="onnx",
        ),
    ]


@hookimpl
def hub_backends() -> list[Backend]:
    return [Backend(
        name="mindspore",
        formats=frozenset({"mindir"}),
        run="hub_mindspore.backend:run_samples",
        latency="hub_mindspore.backend:median_latency_ms",
        description="MindSpore 2.10 on the CPU: mindspore.load + nn.GraphCell (graph mode), in the hub-managed "
                    "'mindspore' environment",
        environment=ENVIRONMENT,
    )]
