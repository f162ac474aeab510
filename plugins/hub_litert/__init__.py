"""The TFLite format and the LiteRT backend (ai-edge-litert's interpreter; tflite-runtime or tf.lite as
fallbacks). Declarations only: detection reads the flatbuffer with hub_litert.flatbuffer (no framework), and
description, running and timing live in hub_litert.interpreter, imported by the worker that needs them.

Other plugins produce this format (TensorFlow's converter, onnx2tf, litert-torch): they name it "tflite" and
leave running it to the "litert" backend.
"""
from __future__ import annotations

from hub.declarations import Backend, Format
from hub.hookspecs import hookimpl

LITERT = ("ai-edge-litert>=1.2",)


@hookimpl
def hub_formats() -> list[Format]:
    return [
        Format(
            name="tflite",
            detect="hub_litert.flatbuffer:detect_tflite",
            describe="hub_litert.interpreter:describe_tflite",
            extensions=(".tflite",),
            description="TensorFlow Lite / LiteRT flatbuffer (precision read from its tensors' types)",
            requires=LITERT,
            extra="tflite",
        )
    ]


@hookimpl
def hub_backends() -> list[Backend]:
    return [
        Backend(
            name="litert",
            formats=frozenset({"tflite"}),
            run="hub_litert.interpreter:run_samples",
            latency="hub_litert.interpreter:median_latency_ms",
            output_names="hub_litert.interpreter:output_names",
            description="LiteRT interpreter on the CPU (XNNPACK); int8 inputs and outputs are quantized and "
                        "dequantized with the model's own scale and zero point",
            requires=LITERT,
            extra="tflite",
        )
    ]
