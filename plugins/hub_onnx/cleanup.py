"""Graph clean-up steps (fp32 raw -> fp32 optimized): onnxslim, or ONNX Runtime's quantization pre-processing."""
from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from hub.declarations import StepContext
from hub.kit import working_directory
from hub.errors import StepFailedError
from hub_onnx.model_file import is_large, iter_nodes, load_model, opset_version, save_model
from hub_onnx.opset import upgraded

# onnxslim shape-infers with ONNX Runtime's symbolic inference, which returns None below opset 7.
OLDEST_SLIMMABLE_OPSET = 7


def run_onnxslim(ctx: StepContext) -> Path:
    """Fold constants, fuse Conv+BN and drop dead nodes with onnxslim; a model older than opset 7 is moved to a
    current opset first (onnxslim's shape inference returns nothing for it, and it would fail on a None)."""
    import onnxslim

    model = load_model(ctx.input_path)
    opset_before = opset_version(model)
    if opset_before is not None and opset_before < OLDEST_SLIMMABLE_OPSET:
        model = upgraded(model)
        ctx.notes.update(opset_upgraded_from=opset_before, opset=opset_version(model))
    nodes_before = sum(1 for _ in iter_nodes(model))
    slimmed = onnxslim.slim(model)
    if slimmed is None:  # onnxslim reports some failures by returning nothing
        raise StepFailedError("onnxslim could not process this model (it returned no model)")
    output = save_model(slimmed, ctx.workdir / "model.slim.onnx")
    ctx.notes.update(nodes_before=nodes_before, nodes_after=sum(1 for _ in iter_nodes(slimmed)),
                     op_types_after=dict(Counter(n.op_type for n in iter_nodes(slimmed))))
    return output


def run_quant_preprocess(ctx: StepContext) -> Path:
    """ONNX Runtime's quant_pre_process: symbolic shape inference, basic ORT optimizations, ONNX shapes."""
    model = load_model(ctx.input_path, with_weights=False)
    large = is_large(model, ctx.input_path)
    output = ctx.workdir / "model.preprocessed.onnx"
    scratch = ctx.workdir / "scratch"
    scratch.mkdir()
    settings = dict(save_as_external_data=large, all_tensors_to_one_file=True,
                    external_data_location=output.name + ".data" if large else None)
    # Symbolic shape inference leaves *.data and sym_shape_infer_temp.onnx in the current directory.
    try:
        with working_directory(scratch):
            _pre_process_with_fallback(ctx, output, settings)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = load_model(output, with_weights=False)
    ctx.notes.update(nodes_before=sum(1 for _ in iter_nodes(model)),
                     nodes_after=sum(1 for _ in iter_nodes(result)))
    return output


def _pre_process_with_fallback(ctx: StepContext, output: Path, settings: dict[str, Any]) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, target = str(ctx.input_path.resolve()), str(output.resolve())
    try:
        quant_pre_process(source, target, **settings)
        ctx.notes["symbolic_shape_inference"] = True
    except Exception as error:  # e.g. "Incomplete symbolic shape inference" on BERT-style exports
        reason = f"{type(error).__name__}: {error}"[:300]
        logging.getLogger(__name__).info("symbolic shape inference failed (%s); skipping it", reason)
        ctx.notes.update(symbolic_shape_inference=False, symbolic_shape_error=reason)
        quant_pre_process(source, target, skip_symbolic_shape=True, **settings)
