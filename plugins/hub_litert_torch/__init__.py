"""torch.export -> TFLite directly with litert-torch (formerly ai-edge-torch): float32, and full-integer int8 through
its PT2E quantizer (torchao's prepare_pt2e/convert_pt2e), calibrated on the user's samples.

Declarations only: behaviour lives in hub_litert_torch.convert, imported by the worker that runs a step. Nothing
here imports torch or litert-torch.
"""
from __future__ import annotations

from hub.declarations import Option, Request, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

LITERT_TORCH = ("litert-torch>=0.10", "torch>=2.5", "torchao>=0.10", "ai-edge-litert>=2.0")
FP32_PROGRAM = Requirement.of(format="torch-export", precision="fp32")

# Symmetric per-channel int8 weights, per-tensor int8 activations (HistogramObserver), as litert-torch's own
# examples use.
# io_dtype and full_integer follow hub_tensorflow's convention (the tflite-arm target sets them): PT2E always
# quantizes the inputs and outputs themselves, so only io_dtype int8 can be met; full_integer fails a model that
# keeps a float operator, naming it.
INT8_OPTIONS = (
    Option("per_channel", bool, True, "one weight scale per output channel"),
    Option("io_dtype", str, "int8", "the type of the model's inputs and outputs: int8, uint8 or float32"),
    Option("full_integer", bool, True, "fail a model that keeps a float operator, naming those operators"),
    Option("max_calibration_samples", int, 200, "at most this many calibration samples are used"),
    Option("random_calibration_samples", int, 16, "seeded random samples used when there is no calibration"),
    Option("seed", int, 0, "seed of those random samples"),
)
INT8 = Request("int8", "precision", "int8", description="static int8 (weights and activations, calibrated)")


@hookimpl
def hub_converters() -> list[Step]:
    # Cost terms: importing torch, torchao, litert-torch and its TF-based converter in a fresh worker takes 5-8 s;
    # a small CNN then converts in about 1.5 s (float32 and int8 alike). The I/O keeps PyTorch's layout (NCHW).
    return [
        Step(
            name="litert-torch",
            accepts=FP32_PROGRAM,
            produces={"format": "tflite", "graph": "optimized", "layout": "source"},
            run="hub_litert_torch.convert:convert_program_to_tflite",
            description="litert-torch: ExportedProgram -> TFLite float32 (inputs and outputs keep the PyTorch "
                        "layout)",
            seconds=10.0, seconds_per_mb=0.5, fidelity_loss=0.0, size_ratio=1.0,
            requires=LITERT_TORCH, extra="litert-torch",
        ),
        Step(
            name="litert-torch-int8",
            accepts=FP32_PROGRAM,
            produces={"format": "tflite", "precision": "int8", "graph": "optimized", "layout": "source"},
            run="hub_litert_torch.convert:quantize_program_to_tflite",
            description="litert-torch PT2E static int8: full-integer with int8 inputs and outputs, per-channel "
                        "int8 weights, activations calibrated on the samples (inputs and outputs keep the PyTorch "
                        "layout)",
            # Its int8 of a real pretrained mobile CNN was silently far off (cosine 0.79, docs/notes.md) where onnx2tf's
            # kept 0.99: a higher expected loss ranks it after the ONNX route, as the fallback.
            seconds=12.0, seconds_per_mb=1.5, fidelity_loss=0.02, size_ratio=0.27,
            needs_calibration=True, options=INT8_OPTIONS, satisfies=(INT8,),
            requires=LITERT_TORCH, extra="litert-torch",
        ),
    ]
