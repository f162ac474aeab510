"""Run functions of the PyTorch converters. Each takes a StepContext and returns the artifact it wrote in
ctx.workdir. torch is imported inside functions only."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from hub.declarations import StepContext
from hub.errors import MissingDependencyError, UsageError
from hub_torch import DYNAMO_OPSET, LEGACY_OPSET
from hub_torch.describe import find_state_dict, load_torch_file, load_torchscript, torchscript_input_specs
from hub_torch.tensors import (
    example_tensors,
    flat_input_module,
    load_program,
    program_input_names,
    program_input_specs,
    quiet_torch_deprecations,
)

if TYPE_CHECKING:
    import torch

# Noise from torch 2.13 that says nothing about this model.
LEGACY_EXPORTER_WARNINGS = (
    "You are using the legacy TorchScript-based ONNX export",
    "no signature found for",
    "The feature will be removed",
)


def export_program_to_onnx(ctx: StepContext) -> Path:
    """torch-export -> onnx with the dynamo exporter; ONNX input names are the program's user input names."""
    import torch

    if importlib.util.find_spec("onnxscript") is None:
        raise MissingDependencyError("the dynamo ONNX exporter needs onnxscript: pip install 'conversion-hub[torch]'")
    # The exporter warns once per torchvision op it cannot register when torchvision is absent: noise here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    program = load_program(ctx.input_path)
    opset = int(ctx.options.get("opset", DYNAMO_OPSET))
    output = ctx.workdir / "model.onnx"
    with quiet_torch_deprecations():
        torch.onnx.export(
            program,
            f=str(output),
            dynamo=True,
            external_data=False,
            opset_version=opset,
            input_names=program_input_names(program),
            verbose=False,
        )
    ctx.notes.update(exporter="torch.onnx dynamo (ExportedProgram)", opset=opset, torch=torch.__version__)
    return output


def trace_program_to_torchscript(ctx: StepContext) -> Path:
    """torch-export -> torchscript by tracing program.module() on batch-1 example inputs."""
    import torch

    program = load_program(ctx.input_path)
    example = example_tensors(ctx.inputs or program_input_specs(program), "torch-trace-to-torchscript")
    output = ctx.workdir / "model.pt"
    with quiet_torch_deprecations():
        # program.module() checks its input shapes in Python; tracing those checks is harmless.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(flat_input_module(program), example, check_trace=False)
        torch.jit.save(traced, str(output))
    ctx.notes.update(tracer="torch.jit.trace", example_shapes=[list(tensor.shape) for tensor in example])
    return output


def export_torchscript_to_onnx(ctx: StepContext) -> Path:
    """torchscript -> onnx with the TorchScript (legacy) exporter; outputs are named output_0, output_1, ..."""
    import torch
    from torch.utils._pytree import tree_leaves

    module = load_torchscript(ctx.input_path)
    specs = ctx.inputs or torchscript_input_specs(module)
    example = example_tensors(specs, "torchscript-onnx-export")
    with torch.no_grad():
        output_count = len(tree_leaves(module(*example)))
    opset = int(ctx.options.get("opset", LEGACY_OPSET))
    output = ctx.workdir / "model.onnx"
    with warnings.catch_warnings():
        for message in LEGACY_EXPORTER_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        torch.onnx.export(
            module,
            example,
            str(output),
            dynamo=False,
            input_names=[spec.name for spec in specs],
            output_names=[f"output_{index}" for index in range(output_count)],
            opset_version=opset,
        )
    ctx.notes.update(exporter="torch.onnx TorchScript (legacy)", opset=opset, torch=torch.__version__)
    return output


def export_pickle_to_program(ctx: StepContext) -> Path:
    """torch-pickle -> torch-export: load a pickled nn.Module (or a state_dict into model_factory's module) and
    torch.export it with batch-1 example inputs."""
    import torch

    module, loaded_as = load_pickled_module(ctx.input_path, ctx.options)
    example = example_tensors(ctx.inputs, "torch-pickle-export")
    program = torch.export.export(module.eval(), example)
    output = ctx.workdir / "model.pt2"
    torch.export.save(program, str(output))
    ctx.notes.update(loaded_as=loaded_as, input_names=program_input_names(program))
    return output


def load_pickled_module(path: Path, options: Mapping[str, Any]) -> tuple["torch.nn.Module", str]:
    """The module a torch.save file holds, and how it was found ("module" or "state_dict")."""
    import torch

    loaded = load_torch_file(path, options)
    if isinstance(loaded, torch.nn.Module):
        return loaded, "module"
    state_dict = find_state_dict(loaded)
    if state_dict is None:
        raise UsageError(f"{path} holds a {type(loaded).__name__}, neither an nn.Module nor a state_dict")
    module = build_from_factory(options.get("model_factory"), path)
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as error:
        raise UsageError(f"the state_dict in {path} does not fit the model_factory's module", str(error)) from error
    return module, "state_dict"


def build_from_factory(reference: str | None, path: Path) -> "torch.nn.Module":
    import torch

    if not reference:
        raise UsageError(
            f"{path} is a state_dict (weights without the model's code): pass the model_factory option "
            '"pkg.module:function", a function returning the nn.Module to load the weights into'
        )
    module_name, _, function_name = str(reference).partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as error:
        message = f'cannot import model_factory {reference!r}: use "pkg.module:function"'
        raise UsageError(message, str(error)) from error
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"model_factory {reference!r} returned a {type(module).__name__}, not an nn.Module")
    return module
