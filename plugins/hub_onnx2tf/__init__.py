"""ONNX -> TFLite with onnx2tf: float32, float16, dynamic-range int8 and full-integer int8 (int8 inputs and
outputs, calibrated on the user's samples), each with channels-last I/O or, for --keep-layout, the source's.

Declarations only: behaviour lives in hub_onnx2tf.convert, imported by the worker that runs a step. Nothing here
imports onnx2tf, TensorFlow or onnx.
"""
from __future__ import annotations

from hub.declarations import Option, Request, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

# onnx2tf 1.28.8 declares no dependencies of its own; these are what it imports (docs/notes.md).
ONNX2TF = ("onnx2tf>=1.28.8", "onnx>=1.16", "onnx-graphsurgeon>=0.5", "sng4onnx>=1.0", "psutil>=5",
           "onnxslim>=0.1.50", "tensorflow>=2.16", "tf-keras>=2.16", "ai-edge-litert>=2.0")

FP32_ONNX = Requirement.of(format="onnx", precision="fp32")

# The options every variant shares. mean 0 / std 1: the hub's calibration samples are already preprocessed,
# exactly what the model is fed, so onnx2tf must not normalize them again (its defaults are ImageNet's).
COMMON_OPTIONS = (
    Option("quant_type", str, "per-channel", "onnx2tf's weight quantization: per-channel or per-tensor"),
    Option("max_calibration_samples", int, 200, "at most this many calibration samples are used"),
    Option("seed", int, 0, "seed of the random samples used when there is no calibration"),
    # TFLite has no float64 kernels: a float64 model is converted computing in float32 (verification measures
    # the difference) rather than into a file no interpreter loads.
    Option("narrow_float64", bool, True, "convert a float64 model computing in float32"),
    # 3-D pools (Flex-only in TFLite) and strided dilated convolutions (refused by TF) are rewritten into
    # equivalent operators first (hub_onnx2tf.lowering).
    Option("lower_for_tflite", bool, True, "rewrite operators TFLite lacks into equivalent ones first"),
    # onnx2tf converts computed pads and shapes wrongly unless onnxsim folded them first (hub_onnx2tf.convert).
    Option("fold_constants", bool, True, "fold constant and shape subgraphs at the concrete input shapes first"),
)
# Full-integer int8 (the convention hub_tensorflow and the tflite-arm target use): io_dtype is the type of the
# model's inputs and outputs (int8, uint8 or float32); full_integer fails a model that keeps a float operator
# (onnx2tf allows SELECT_TF_OPS, which would keep float Flex ops) and names those operators.
INT8_OPTIONS = (
    Option("io_dtype", str, "int8", "the type of the model's inputs and outputs: int8, uint8 or float32"),
    Option("full_integer", bool, True, "fail a model that keeps a float operator, naming those operators"),
    Option("activation_bits", int, 8, "8, or 16: int16 activations inside (TFLite's 16x8 mode), the inputs and "
                                      "outputs still of io_dtype (requantized at the edges)"),
)
# When int8 activations lose too much, 16-bit ones: TFLite's integer 16x8 mode (int8 weights, int16 activations,
# integer kernels), the full-integer answer to a sensitive model. onnx2tf writes that file in the same run.
INT8_LADDER = ({"activation_bits": 16},)
INT8 = Request("int8", "precision", "int8", description="static int8 (weights and activations, calibrated)")
FP16 = Request("fp16", "precision", "fp16", description="float16 weights and activations")

# (step name suffix, precision, cost terms). Measured with TF 2.21 / onnx2tf 1.28.8 on 2 CPU cores: importing
# onnx2tf and TensorFlow in a fresh worker takes 3-5 s; a small CNN converts in 1.5 s, larger models at roughly a
# second per MB per TFLite file written. The int8 run writes four calibrated files (integer, full-integer, and
# two int16-activation variants) whatever one asks for, hence its higher per-MB time.
VARIANTS = (
    ("", "fp32", dict(seconds=8.0, seconds_per_mb=0.8, fidelity_loss=0.0, size_ratio=1.0)),
    ("-fp16", "fp16", dict(seconds=8.0, seconds_per_mb=1.0, fidelity_loss=0.0005, size_ratio=0.5)),
    ("-dynamic-int8", "int8-dynamic", dict(seconds=10.0, seconds_per_mb=1.2, fidelity_loss=0.01, size_ratio=0.27)),
    # onnx2tf's int8 of a real pretrained mobile CNN kept logit cosine 0.99 (docs/notes.md)
    ("-int8", "int8", dict(seconds=15.0, seconds_per_mb=4.0, fidelity_loss=0.01, size_ratio=0.27)),
)
DESCRIPTIONS = {
    "fp32": "float32",
    "fp16": "float16 weights, float32 inputs and outputs",
    "int8-dynamic": "dynamic-range int8 (int8 weights, float activations and I/O)",
    "int8": "full-integer int8 with int8 inputs and outputs, per-channel weights, calibrated on the samples",
}
# Keeping NCHW costs a Transpose at every 4-D input in the converted graph: a little slower to run, and the
# planner should prefer the channels-last variant unless the user asks to keep the layout.
KEEP_LAYOUT_EXTRA_SECONDS = 2.0


def _step(suffix: str, precision: str, costs: dict, keep_layout: bool) -> Step:
    layout = "source" if keep_layout else "nhwc"
    name = f"onnx2tf{'-nchw' if keep_layout else ''}{suffix}"
    io = ("4-D inputs and outputs keep the source's NCHW layout" if keep_layout
          else "4-D inputs and outputs become channels-last (NHWC)")
    if keep_layout:
        costs = {**costs, "seconds": costs["seconds"] + KEEP_LAYOUT_EXTRA_SECONDS}
    return Step(
        name=name,
        accepts=FP32_ONNX,
        # onnx2tf simplifies the graph itself (onnxslim) before lowering it, so its output is optimized whatever
        # the input was.
        produces={"format": "tflite", "precision": precision, "graph": "optimized", "layout": layout},
        run="hub_onnx2tf.convert:convert_onnx_to_tflite",
        description=f"onnx2tf: ONNX -> TFLite {DESCRIPTIONS[precision]}; {io}",
        needs_calibration=precision == "int8",
        options=(*COMMON_OPTIONS, *(INT8_OPTIONS if precision == "int8" else ()),
                 Option("precision", str, precision, "set by the step: the precision it converts to"),
                 Option("keep_layout", bool, keep_layout, "set by the step: keep the source's NCHW layout")),
        satisfies={"int8": (INT8,), "fp16": (FP16,)}.get(precision, ()),
        ladder=INT8_LADDER if precision == "int8" else (),
        requires=ONNX2TF,
        extra="onnx2tf",
        **costs,
    )


@hookimpl
def hub_converters() -> list[Step]:
    return [_step(suffix, precision, costs, keep_layout)
            for keep_layout in (False, True)
            for suffix, precision, costs in VARIANTS]
