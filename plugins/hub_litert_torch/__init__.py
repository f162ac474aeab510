"""torch.export -> TFLite directly with litert-torch (formerly ai-edge-torch): float32, and full-integer int8 through
its PT2E quantizer (torchao's prepare_pt2e/convert_pt2e), calibrated on the user's samples.

Declarations only: behaviour lives in hub_litert_torch.convert, imported by the worker that runs a step. Nothing
here imports torch or litert-torch.
"""
from __future__ import annotations

from hub.declarations import Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

LITERT_TORCH = ("litert-torch>=0.10", "torch>=2.5", "torchao>=0.10", "ai-edge-litert>=2.0")
FP32_PROGRAM = Requirement.of(format="torch-export", precision="fp32")

# Symmetric per-channel int8 weights, per-tensor int8 activations (HistogramObserver), as litert-torch's own
# examples use.
# io_dtype and full_integer follow hub_tensorflow's convention (the tflite-arm target sets them): PT2E always
# quantizes the inputs and outputs themselves, so only io_dtype int8 can be met; full_integer fails a model that
# keeps a float operator, naming it.
INT8_OPTIONS = {"per_channel": True, "io_dtype": "int8", "full_integer": True, "max_calibration_samples": 200,
                "random_calibration_samples": 16, "seed": 0}


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
            # Its int8 of a real pretrained mobile CNN was silently far off (cosine 0.79, FACTS.md) where onnx2tf's
            # kept 0.99: a higher expected loss ranks it after the ONNX route, as the fallback.
            seconds=12.0, seconds_per_mb=1.5, fidelity_loss=0.02, size_ratio=0.27,
            needs_calibration=True, options=INT8_OPTIONS,
            requires=LITERT_TORCH, extra="litert-torch",
        ),
    ]
