"""The translator steps: what the runner calls in a worker (the hub's own environment)."""
from __future__ import annotations

from pathlib import Path

from hub.declarations import StepContext


def onnx_to_mindir(ctx: StepContext) -> Path:
    from hub_mindspore.from_onnx import onnx_to_mindir as translate

    shapes = {spec.name: tuple(spec.shape) for spec in ctx.inputs}  # concrete: MindIR has static shapes
    return translate(ctx.input_path, ctx.workdir / f"{ctx.input_path.stem}.mindir", shapes)


def mindir_to_onnx(ctx: StepContext) -> Path:
    from hub_mindspore.to_onnx import mindir_to_onnx as translate

    return translate(ctx.input_path, ctx.workdir / f"{ctx.input_path.stem}.onnx")
