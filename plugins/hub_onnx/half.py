"""fp16 step: float16 weights and activations, float32 inputs and outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hub.declarations import StepContext, defaults_of
from hub.errors import HubError
from hub_onnx import FP16_OPTIONS
from hub_onnx.model_file import load_model, save_model


def run_fp16(ctx: StepContext) -> Path:
    """Convert with onnxconverter-common; if ONNX Runtime cannot load that, with onnxruntime.transformers."""
    options = {**defaults_of(FP16_OPTIONS), **ctx.options}
    output = ctx.workdir / "model.fp16.onnx"
    failures = []
    for converter_name, convert in (("onnxconverter-common", _with_onnxconverter_common),
                                    ("onnxruntime.transformers", _with_onnxruntime_transformers)):
        try:
            save_model(convert(load_model(ctx.input_path), list(options["op_block_list"])), output)
            _check_loads_in_onnxruntime(output)
        except Exception as error:
            failures.append(f"{converter_name}: {error}")
            continue
        ctx.notes.update(converter=converter_name, keep_io_types=True)
        if failures:
            ctx.notes["fallback_because"] = failures
        return output
    raise HubError("fp16 conversion gave no model ONNX Runtime can load (both converters tried)",
                   detail="\n".join(failures))


def _with_onnxconverter_common(model: Any, extra_blocked_ops: list[str]) -> Any:
    from onnxconverter_common import float16

    # Its default block list replaced, not extended, by op_block_list; Cast stays fp32 or BERT breaks.
    blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | {"Cast"} | set(extra_blocked_ops))
    return float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)


def _with_onnxruntime_transformers(model: Any, extra_blocked_ops: list[str]) -> Any:
    from onnxruntime.transformers import float16

    blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(extra_blocked_ops))
    return float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)


def _check_loads_in_onnxruntime(path: Path) -> None:
    import onnxruntime

    onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


