"""The ONNX Runtime backend (CPU execution provider). Declarations only: behaviour is in
hub_onnxruntime.session, imported by the worker that runs or times a model."""
from __future__ import annotations

from hub.declarations import Backend
from hub.hookspecs import hookimpl


@hookimpl
def hub_backends() -> list[Backend]:
    return [
        Backend(
            name="onnxruntime",
            formats=frozenset({"onnx"}),
            run="hub_onnxruntime.session:run_samples",
            latency="hub_onnxruntime.session:median_latency_ms",
            output_names="hub_onnxruntime.session:output_names",
            description="ONNX Runtime, CPUExecutionProvider, one session per call",
            requires=("onnxruntime>=1.20",),
            extra="onnx",
        )
    ]
