"""The ONNX format and the ONNX -> ONNX compressors (clean-ups, int8 static and dynamic, fp16, int4 weights,
magnitude pruning and weight clipping).

Declarations only: behaviour lives in hub_onnx.model_file, .cleanup, .quantize, .half, .int4 and .sparsity,
imported by the worker that runs a step. Nothing here imports onnx or onnxruntime.

Quantization schemes are step options (`step_options={"ort-quantize-static": {...}}` in the API): static int8
takes per_channel, activation_type/weight_type (uint8, int8, uint16, int16), calibrate_method (minmax, entropy,
percentile, distribution), symmetric_activations, reduce_range; dynamic int8 takes per_channel, weight_type,
reduce_range; int4 takes block_size (16-256), symmetric, accuracy_level, quantize_gather.
"""
from __future__ import annotations

from hub.declarations import Backend, Format, Option, Request, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

ONNX = ("onnx>=1.16",)
ONNXRUNTIME = ("onnxruntime>=1.20",)

# uint8 activations with int8 per-channel weights: uint8 ran 1.7-8x faster than int8 activations on x86, and
# per-tensor weights dropped a depthwise CNN to cosine 0.85 (measured; docs/notes.md).
QUANT_TYPES = "uint8, int8, uint16 or int16"
CALIBRATION_OPTIONS = (
    Option("max_calibration_samples", int, 256, "at most this many calibration samples are used"),
    Option("random_calibration_samples", int, 16, "seeded random samples used when there is no calibration"),
    Option("seed", int, 0, "seed of those random samples"),
)
STATIC_INT8_OPTIONS = (
    Option("per_channel", bool, True, "one weight scale per output channel (per tensor when false)"),
    Option("activation_type", str, "uint8", f"activation type: {QUANT_TYPES}"),
    Option("weight_type", str, "int8", f"weight type: {QUANT_TYPES}"),
    Option("calibrate_method", str, "minmax", "minmax, entropy, percentile or distribution"),
    Option("symmetric_activations", bool, False, "symmetric activation ranges (zero point 0)"),
    Option("reduce_range", bool, False, "7-bit weights, for CPUs without VNNI"),
    Option("exclude_sensitive", int, 0, "keep this many of the weighted nodes whose quantization loses the most "
                                        "signal-to-noise in float (hub_onnx.sensitivity)"),
    Option("widen_sensitive", int, 0, "give the outputs of this many of those nodes 16-bit activations"),
    Option("float_before_log", bool, False, "keep float every node whose results a Log reads (a spectrogram "
                                            "front end): the small values a logarithm amplifies do not survive "
                                            "linear quantization"),
    *CALIBRATION_OPTIONS,
)
# What ort-quantize-static tries when its plain result fails verification, cheapest first (hub.runner climbs
# it): other calibration methods; then, in a model with a Log, everything the Log reads kept float (Basic
# Pitch's constant-Q front end, whose int8 result stayed at cosine 0.93 through every other rung, 16-bit
# activations everywhere included: linear quantization loses the quiet bins a log-magnitude reads; a model
# without a Log declines the rung before calibrating); then 16-bit activations at the outputs of the 2, then 8, weighted nodes that
# lose the most signal-to-noise (EfficientNet-Lite0: cosine 0.890 -> 0.978 with 2, at the plain int8 latency:
# the loss sits in the activations of its linear bottlenecks, which keeping the convolution float does not
# touch, since its consumer quantizes that tensor all the same); then 1, 2, 4, 8 of those nodes kept in float;
# last, 16-bit activations everywhere, which keep the file int8-sized but ran 3x slower than fp32 in ONNX
# Runtime 1.32 on EfficientNet-Lite0 (no 16-bit kernels). On a small depthwise CNN whose int8 fell to cosine
# 0.86, keeping its first convolution in float gave 0.97 and four of them 0.9999; no 8-bit calibration method
# helped.
STATIC_INT8_LADDER = (
    {"calibrate_method": "percentile"},
    {"calibrate_method": "entropy"},
    {"float_before_log": True},
    {"widen_sensitive": 2},
    {"widen_sensitive": 8},
    {"exclude_sensitive": 1},
    {"exclude_sensitive": 2},
    {"exclude_sensitive": 4},
    {"exclude_sensitive": 8},
    {"activation_type": "uint16"},
)
# Per-channel kept a MiniLM-class transformer at cosine 0.993 where the per-tensor default gave 0.955.
DYNAMIC_INT8_OPTIONS = (
    Option("per_channel", bool, True, "one weight scale per output channel (per tensor when false)"),
    Option("weight_type", str, "int8", f"weight type: {QUANT_TYPES}"),
    Option("reduce_range", bool, False, "7-bit weights, for CPUs without VNNI"),
)
FP16_OPTIONS = (Option("op_block_list", list, ["Cast"], "operators left in float32"),)
# Block 32 keeps more accuracy than 128 for about 3% more bytes; symmetric needs no zero points.
INT4_OPTIONS = (
    Option("block_size", int, 32, "weights per scale, 16-256"),
    Option("symmetric", bool, True, "symmetric blocks (no zero points)"),
    Option("accuracy_level", int, None, "MatMulNBits accuracy_level (None: ONNX Runtime's default)"),
    Option("gemm_to_matmul", bool, True, "rewrite Gemm as MatMul + Add so its weights are quantized too"),
    Option("quantize_gather", bool, False, "quantize embedding Gathers as well"),
)


def _exemptions(by_default: bool) -> tuple[Option, ...]:
    return (
        Option("exempt_depthwise", bool, by_default, "leave depthwise convolutions dense"),
        Option("exempt_first_layer", bool, by_default, "leave the first layer dense"),
    )


PRUNE_OPTIONS = (
    Option("sparsity", float, 0.5, "the fraction of prunable weights set to zero", between=(0.0, 1.0)),
    Option("scope", str, "global", "global: one magnitude threshold over all layers; layer: one per layer"),
    *_exemptions(True),
)
CLIP_OPTIONS = (Option("threshold", float, 1e-3, "weights whose magnitude is below this become zero"),
                *_exemptions(False))

PRUNE = Request("prune", "traits", "pruned", "sparsity",
                "global magnitude pruning to this fraction of zero weights (e.g. prune:0.5)")
CLIP = Request("clip", "traits", "clipped", "threshold", "zero every weight whose magnitude is below this value")
INT8 = Request("int8", "precision", "int8", description="static int8 (weights and activations, calibrated)")
FP16 = Request("fp16", "precision", "fp16", description="float16 weights and activations")
INT4_WEIGHTS = Request("int4-weights", "precision", "int4", description="4-bit weight-only quantization of "
                       "MatMul/Gemm")

FP32_RAW = Requirement.of(format="onnx", precision="fp32", graph="raw")
FP32_OPTIMIZED = Requirement.of(format="onnx", precision="fp32", graph="optimized")
FP32_ANY_GRAPH = Requirement.of(format="onnx", precision="fp32")


@hookimpl
def hub_formats() -> list[Format]:
    return [
        Format(
            name="onnx",
            detect="hub_onnx.model_file:detect_onnx",
            describe="hub_onnx.model_file:describe_onnx",
            extensions=(".onnx",),
            description="ONNX model (protobuf); external data is read only from the model's own folder",
            requires=ONNX,
            extra="onnx",
        )
    ]


@hookimpl
def hub_backends() -> list[Backend]:
    return [
        Backend(
            name="onnx-reference",
            formats=frozenset({"onnx"}),
            run="hub_onnx.reference:run_samples",
            output_names="hub_onnx.reference:output_names",
            description="onnx's reference evaluator: slow, exact, runs every opset; used when ONNX Runtime "
                        "refuses a model (old opsets)",
            requires=("onnx>=1.16",),
            extra="onnx",
            priority=10,
        )
    ]


@hookimpl
def hub_compressors() -> list[Step]:
    return [
        Step(
            name="onnxslim",
            accepts=FP32_RAW,
            produces={"graph": "optimized"},
            run="hub_onnx.cleanup:run_onnxslim",
            description="onnxslim: constant folding, Conv+BN fusion, dead-node removal (lossless); a model older "
                        "than opset 7 is first moved to opset 13 with onnx's version converter",
            seconds=2.0, seconds_per_mb=0.05, size_ratio=0.95,
            requires=ONNX + ("onnxslim>=0.1.50",), extra="onnx",
        ),
        Step(
            name="ort-quant-preprocess",
            accepts=FP32_RAW,
            produces={"graph": "optimized"},
            run="hub_onnx.cleanup:run_quant_preprocess",
            description="ONNX Runtime quant_pre_process: symbolic shape inference and basic graph optimizations",
            seconds=5.0, seconds_per_mb=0.2, size_ratio=1.0,
            requires=ONNX + ONNXRUNTIME, extra="onnx",
        ),
        Step(
            name="ort-quantize-static",
            accepts=FP32_OPTIMIZED,
            produces={"precision": "int8"},
            run="hub_onnx.quantize:run_static_int8",
            description="ONNX Runtime static int8: QDQ, per-channel int8 weights, uint8 activations calibrated "
                        "with MinMax",
            seconds=10.0, seconds_per_mb=0.5, fidelity_loss=0.01, size_ratio=0.27,
            needs_calibration=True, options=STATIC_INT8_OPTIONS, satisfies=(INT8,), ladder=STATIC_INT8_LADDER,
            requires=ONNX + ONNXRUNTIME, extra="onnx",
        ),
        Step(
            name="ort-quantize-dynamic",
            accepts=FP32_OPTIMIZED,
            produces={"precision": "int8-dynamic"},
            run="hub_onnx.quantize:run_dynamic_int8",
            description="ONNX Runtime dynamic int8: per-channel int8 weights, activations quantized at run time",
            seconds=3.0, seconds_per_mb=0.1, fidelity_loss=0.01, size_ratio=0.27,
            options=DYNAMIC_INT8_OPTIONS,
            requires=ONNX + ONNXRUNTIME, extra="onnx",
        ),
        Step(
            name="onnx-fp16",
            accepts=FP32_OPTIMIZED,
            produces={"precision": "fp16"},
            run="hub_onnx.half:run_fp16",
            description="float16 weights and activations with float32 inputs and outputs (onnxconverter-common)",
            seconds=2.0, seconds_per_mb=0.05, fidelity_loss=0.0005, size_ratio=0.5,
            options=FP16_OPTIONS, satisfies=(FP16,),
            requires=ONNX + ONNXRUNTIME + ("onnxconverter-common>=1.14",), extra="onnx",
        ),
        Step(
            name="onnx-int4-weights",
            accepts=FP32_OPTIMIZED,
            produces={"precision": "int4"},
            run="hub_onnx.int4:run_int4_weights",
            description="ONNX Runtime MatMulNBits: 4-bit blocked symmetric weights for MatMul (and Gemm rewritten "
                        "as MatMul); embedding Gathers stay float32 unless quantize_gather",
            seconds=3.0, seconds_per_mb=0.2, fidelity_loss=0.02, size_ratio=0.16,
            options=INT4_OPTIONS, satisfies=(INT4_WEIGHTS,),
            requires=ONNX + ("onnxruntime>=1.20",), extra="onnx",
        ),
        # Pruning on ONNX serves sources that are not torch programs; for a torch source the torch step before
        # export is 2 s cheaper, so the planner prunes there (and only there can distillation follow).
        Step(
            name="onnx-magnitude-prune",
            min_cosine=0.8,
            accepts=FP32_ANY_GRAPH,
            produces={"traits": "+pruned"},
            run="hub_onnx.sparsity:magnitude_prune",
            description="zero the smallest Conv/Gemm/MatMul weight initializers (L1 magnitude, global or per layer; "
                        "first and depthwise layers exempt by default)",
            seconds=6.0, seconds_per_mb=0.05, fidelity_loss=0.02, size_ratio=1.0,
            options=PRUNE_OPTIONS, satisfies=(PRUNE,),
            requires=ONNX, extra="onnx",
        ),
        Step(
            name="onnx-weight-clip",
            min_cosine=0.8,
            accepts=FP32_ANY_GRAPH,
            produces={"traits": "+clipped"},
            run="hub_onnx.sparsity:clip_weights",
            description="zero every Conv/Gemm/MatMul weight whose magnitude is below `threshold`",
            seconds=6.0, seconds_per_mb=0.05, fidelity_loss=0.005, size_ratio=1.0,
            options=CLIP_OPTIONS, satisfies=(CLIP,),
            requires=ONNX, extra="onnx",
        ),
    ]
