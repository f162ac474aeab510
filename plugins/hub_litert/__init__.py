"""The TFLite format and the LiteRT backend (ai-edge-litert's interpreter; tflite-runtime or tf.lite as
fallbacks). Declarations only: detection reads the flatbuffer with hub_litert.flatbuffer (no framework), and
description, running and timing live in hub_litert.interpreter, imported by the worker that needs them.

One converter, tflite-widen-fp16, rewrites a float16 TFLite as float32 in place of a conversion through ONNX
(hub_litert.rewrite).

Other plugins produce this format (TensorFlow's converter, onnx2tf, litert-torch): they name it "tflite" and
leave running it to the "litert" backend.
"""
from __future__ import annotations

from hub.declarations import Backend, Format, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

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


@hookimpl
def hub_converters() -> list[Step]:
    return [
        Step(
            name="tflite-widen-fp16",
            # raw: a file as some other tool wrote it; onnx2tf's own float16 output is no route to float32
            accepts=Requirement.of(format="tflite", precision="fp16", graph="raw"),
            produces={"precision": "fp32"},
            run="hub_litert.rewrite:widen_to_float32",
            description="float16 TFLite -> float32 TFLite: the float16 weights behind DEQUANTIZE widened (as "
                        "DEQUANTIZE computes them), sparse weights densified, MediaPipe's transposed "
                        "convolution made builtin; lossless, inputs and outputs unchanged",
            seconds=1.0, seconds_per_mb=0.05, size_ratio=2.0,
            requires=LITERT, extra="tflite",
        )
    ]
