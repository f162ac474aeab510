"""Intel NNCF's post-training quantization of ONNX models: a competing int8 compressor to ONNX Runtime's.

NNCF places QDQ pairs by its own rules, corrects biases after quantizing (fast bias correction by default), and
for transformers smooths activation outliers into the weights (SmoothQuant, model_type=transformer). Its files
ran 5-5.5x slower in ONNX Runtime 1.32 than quantize_static's on a mobile CNN of the same size, so it is declared
slower and costlier than ort-quantize-static: the planner tries it when that route fails, or first with
`--prefer fidelity`. Declarations only; hub_nncf.quantize imports nncf inside the worker.

Options: preset (performance: symmetric activations, mixed: asymmetric), fast_bias_correction, model_type
(transformer enables SmoothQuant), ignored_nodes (names kept in float), subset_size (calibration samples).
"""
from __future__ import annotations

from hub.declarations import Option, Request, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

NNCF_OPTIONS = (
    Option("preset", str, "mixed", "performance (symmetric activations) or mixed (asymmetric)"),
    Option("fast_bias_correction", bool, True, "fast bias correction (false: the full, slower algorithm)"),
    Option("model_type", str, None, "transformer: SmoothQuant and transformer-aware placement"),
    Option("ignored_nodes", list, [], "names of nodes kept in float"),
    Option("subset_size", int, 300, "at most this many calibration samples"),
)
# When the plain result misses the tolerance: full bias correction, then SmoothQuant's outlier smoothing.
NNCF_LADDER = ({"fast_bias_correction": False}, {"model_type": "transformer"})


@hookimpl
def hub_compressors() -> list[Step]:
    return [
        Step(
            name="nncf-quantize",
            accepts=Requirement.of(format="onnx", precision="fp32", graph="optimized"),
            produces={"precision": "int8"},
            run="hub_nncf.quantize:run_nncf_int8",
            description="NNCF post-training int8 (QDQ, bias correction; SmoothQuant for transformers)",
            seconds=40.0, seconds_per_mb=1.0, fidelity_loss=0.012, size_ratio=0.27,
            needs_calibration=True, options=NNCF_OPTIONS, ladder=NNCF_LADDER,
            satisfies=(Request("int8", "precision", "int8", description="static int8 (weights and activations, "
                               "calibrated)"),),
            requires=("nncf>=3.4", "onnx>=1.16", "onnxruntime>=1.20"), extra="nncf",
        )
    ]
