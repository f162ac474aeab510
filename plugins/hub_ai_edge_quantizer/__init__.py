"""Google's ai-edge-quantizer: full-integer int8 of a float TFLite model, calibrated on the user's samples, with
int8 inputs and outputs (its static_wi8_ai8 recipe: per-channel int8 weights, int8 activations).

It quantizes the TFLite file itself, so a TFLite source (MediaPipe's models, a TFLite export) reaches the
full-integer targets without a detour through ONNX and back, where every converter costs fidelity. A model whose
weights are float16 behind DEQUANTIZE operators reaches it through tflite-widen-fp16 (hub_litert). Declarations
only;
hub_ai_edge_quantizer.quantize imports the library inside the worker.
"""
from __future__ import annotations

from hub.declarations import Option, Request, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

AI_EDGE_QUANTIZER = ("ai-edge-quantizer>=0.10", "ai-edge-litert>=2.0")
RECIPES = ("static_wi8_ai8", "static_wi8_ai16")
RANGES = ("min-max", "moving-average")
OPTIONS = (
    Option("recipe", str, "static_wi8_ai8", "the library's recipe: static_wi8_ai8 (int8 weights and activations) "
                                            "or static_wi8_ai16 (int16 activations where TFLite has int16 kernels, "
                                            "int8 elsewhere and at the inputs and outputs)"),
    Option("ranges", str, "moving-average", "activation ranges from the samples: moving-average (the library's: "
                                            "a recency-weighted mean of each sample's extremes, which clips rare "
                                            "peaks) or min-max (the extremes over all samples)"),
    Option("max_calibration_samples", int, 200, "at most this many calibration samples are used"),
    Option("full_integer", bool, True, "fail a model that keeps a float operator, naming those operators"),
)
# When int8 activations lose too much: 16-bit ones (integer kernels still; TFLite's 16x8 mode), the inputs and
# outputs kept int8 by requantizing at the edges (hub_litert.rewrite.requantize_io).
LADDER = ({"recipe": "static_wi8_ai16"},)


@hookimpl
def hub_compressors() -> list[Step]:
    return [
        Step(
            name="ai-edge-quantizer-int8",
            # a float16 TFLite (a MediaPipe model) comes through tflite-widen-fp16 first
            accepts=Requirement.of(format="tflite", precision="fp32"),
            produces={"precision": "int8"},
            run="hub_ai_edge_quantizer.quantize:quantize_tflite_int8",
            description="ai-edge-quantizer static_wi8_ai8: TFLite -> full-integer int8 TFLite with int8 inputs "
                        "and outputs, per-channel weights, calibrated on the samples",
            # Priced as onnx2tf's int8 conversion: a model that reaches ONNX converts to int8 in one step there,
            # so this one (after a float conversion) is its fallback; a TFLite model quantizes here directly.
            seconds=15.0, seconds_per_mb=4.0, fidelity_loss=0.01, size_ratio=0.27,
            needs_calibration=True, options=OPTIONS, ladder=LADDER,
            satisfies=(Request("int8", "precision", "int8",
                               description="static int8 (weights and activations, calibrated)"),),
            requires=AI_EDGE_QUANTIZER, extra="ai-edge-quantizer",
        )
    ]
