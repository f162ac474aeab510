"""nncf.quantize on an ONNX model, calibrated on the step's samples."""
from __future__ import annotations

from pathlib import Path

from hub.declarations import StepContext, defaults_of
from hub.errors import UsageError
from hub_nncf import NNCF_OPTIONS

PRESETS = ("performance", "mixed")
MODEL_TYPES = (None, "transformer")


def run_nncf_int8(ctx: StepContext) -> Path:
    import nncf
    import onnx

    options = {**defaults_of(NNCF_OPTIONS), **ctx.options}
    if options["preset"] not in PRESETS or options["model_type"] not in MODEL_TYPES:
        raise UsageError(f"nncf-quantize: preset must be one of {PRESETS} and model_type one of {MODEL_TYPES}")
    feeds = ctx.calibration_feeds()
    if not feeds:
        raise UsageError("nncf-quantize needs calibration samples: pass --calibration")
    quantized = nncf.quantize(
        onnx.load(str(ctx.input_path)), nncf.Dataset(feeds),
        preset=getattr(nncf.QuantizationPreset, str(options["preset"]).upper()),
        model_type=nncf.ModelType.TRANSFORMER if options["model_type"] == "transformer" else None,
        fast_bias_correction=bool(options["fast_bias_correction"]),
        subset_size=min(int(options["subset_size"]), len(feeds)),
        ignored_scope=nncf.IgnoredScope(names=list(options["ignored_nodes"])) if options["ignored_nodes"] else None,
    )
    output = ctx.workdir / "model.nncf-int8.onnx"
    onnx.save(quantized, str(output))
    ctx.notes.update({key: options[key] for key in ("preset", "fast_bias_correction", "model_type")},
                     calibration_samples=len(feeds), converter=f"nncf {nncf.__version__}")
    return output
