"""Keras models, SavedModels and float TFLite files -> ONNX with tf2onnx (opset 17), so that the ONNX targets
(onnxruntime-cpu, cpu-int8, ...) are reachable from TensorFlow sources. Input names are set back to the source's
("serving_default_image:0" -> "image") so that samples keyed by the source's names feed the ONNX model."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from hub.declarations import StepContext
from hub.errors import StepFailedError
from hub_tensorflow import ONNX_OPSET
from hub_tensorflow.models import load_keras_model

SUBPROCESS_TAIL_CHARS = 3000
SIGNATURE_PREFIX = "serving_default_"


def keras_to_onnx(ctx: StepContext) -> Path:
    import tf2onnx

    model = load_keras_model(ctx.input_path, ctx.options)
    output = ctx.workdir / "model.onnx"
    tf2onnx.convert.from_keras(model, opset=_opset(ctx), output_path=str(output))
    return _named_like_source(ctx, output)


def savedmodel_to_onnx(ctx: StepContext) -> Path:
    """tf2onnx's command line: its Python API has no SavedModel entry point."""
    output = ctx.workdir / "model.onnx"
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(ctx.input_path),
               "--signature_def", "serving_default", "--opset", str(_opset(ctx)), "--output", str(output)]
    finished = subprocess.run(command, cwd=ctx.workdir, capture_output=True, text=True)
    if finished.returncode != 0 or not output.exists():
        raise StepFailedError("tf2onnx could not convert the SavedModel",
                              detail=(finished.stdout + finished.stderr)[-SUBPROCESS_TAIL_CHARS:])
    return _named_like_source(ctx, output)


def tflite_to_onnx(ctx: StepContext) -> Path:
    """tf2onnx reads dense constants and builtin operators only: a file with sparse weights or MediaPipe's
    transposed convolution is first rewritten into those, on a copy (hub_litert.rewrite)."""
    import tf2onnx
    from hub_litert.rewrite import builtin_copy, needs_rewrite

    source = ctx.input_path
    if needs_rewrite(source):
        source = ctx.workdir / "builtin.tflite"
        ctx.notes.update(builtin_copy(ctx.input_path, source))
    output = ctx.workdir / "model.onnx"
    tf2onnx.convert.from_tflite(str(source), opset=_opset(ctx), output_path=str(output))
    return _named_like_source(ctx, output)


def _opset(ctx: StepContext) -> int:
    return int(ctx.options.get("opset", ONNX_OPSET))


def _named_like_source(ctx: StepContext, path: Path) -> Path:
    """Rename graph inputs whose undecorated name is a source input's name; note the names either way."""
    import onnx

    model = onnx.load(str(path))
    wanted = {spec.name for spec in ctx.inputs}
    renames = {}
    for value in model.graph.input:
        plain = undecorated(value.name)
        if value.name not in wanted and plain in wanted:
            renames[value.name] = plain
    if renames:
        _rename_values(model, renames)
        onnx.save(model, str(path))
    ctx.notes.update(opset=_opset(ctx), inputs=[v.name for v in model.graph.input],
                     outputs=[v.name for v in model.graph.output])
    return path


def undecorated(name: str) -> str:
    """A TensorFlow tensor name without the signature prefix and output index: "serving_default_x:0" -> "x"."""
    name = name.removeprefix(SIGNATURE_PREFIX)
    head, colon, index = name.rpartition(":")
    return head if colon and index.isdigit() else name


def _rename_values(model: Any, renames: dict[str, str]) -> None:
    for value in model.graph.input:
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in renames:
                node.input[index] = renames[name]
