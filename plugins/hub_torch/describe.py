"""describe() for the PyTorch formats: inputs, outputs and parameter counts. Runs in a worker; imports torch."""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.errors import UnsupportedModelError
from hub.states import ModelInfo, TensorSpec
from hub_torch.detect import archive_entries
from hub_torch.tensors import (
    dtype_name,
    example_tensors,
    load_program,
    program_input_specs,
    program_output_specs,
    quiet_torch_deprecations,
    specs_from_options,
    static_shape,
)

if TYPE_CHECKING:
    import torch

UNKNOWN_SHAPE_NOTE = "input shapes are not recorded in the file: pass --input NAME:SHAPE"


def describe_torch_export(path: Path, options: dict[str, Any]) -> ModelInfo:
    program = load_program(path)
    return ModelInfo(
        format="torch-export",
        inputs=program_input_specs(program),
        outputs=program_output_specs(program),
        parameters=sum(parameter.numel() for parameter in program.parameters()),
    )


def describe_torchscript(path: Path, options: dict[str, Any]) -> ModelInfo:
    module = load_torchscript(path)
    inputs = torchscript_input_specs(module) or specs_from_options(options)
    notes: tuple[str, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    if inputs:
        outputs = output_specs(module, example_tensors(inputs, "describe"))
    else:
        inputs = tuple(TensorSpec(name, ()) for name in torchscript_input_names(module))
        notes = (UNKNOWN_SHAPE_NOTE,)
    return ModelInfo(
        format="torchscript",
        inputs=inputs,
        outputs=outputs,
        parameters=sum(parameter.numel() for parameter in module.parameters()),
        notes=notes,
    )


def describe_torch_pickle(path: Path, options: dict[str, Any]) -> ModelInfo:
    import torch

    loaded = load_torch_file(path, options)
    if isinstance(loaded, torch.nn.Module):
        inputs = specs_from_options(options) or tuple(
            TensorSpec(name, ()) for name in inspect.signature(loaded.forward).parameters
        )
        notes = () if specs_from_options(options) else (UNKNOWN_SHAPE_NOTE,)
        parameters = sum(parameter.numel() for parameter in loaded.parameters())
        return ModelInfo(format="torch-pickle", inputs=inputs, parameters=parameters, notes=notes)
    state_dict = find_state_dict(loaded)
    if state_dict is None:
        raise UnsupportedModelError(f"{path} holds a {type(loaded).__name__}, neither an nn.Module nor a state_dict")
    return ModelInfo(
        format="torch-pickle",
        inputs=specs_from_options(options),
        parameters=sum(tensor.numel() for tensor in state_dict.values()),
        notes=("a state_dict: converting it needs the model_factory option (\"pkg.module:function\")",),
    )


def load_torch_file(path: Path, options: Mapping[str, Any]) -> Any:
    """What a torch.save file holds: tensors and plain containers (a state_dict) load with weights_only=True,
    which runs no code from the file; anything else (a pickled module) only with trust_pickle."""
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        refuse_untrusted_pickle(path, options)
        return torch.load(str(path), map_location="cpu", weights_only=False)


def refuse_untrusted_pickle(path: Path, options: Mapping[str, Any]) -> None:
    if not options.get("trust_pickle"):
        raise UnsupportedModelError(
            f"{path} is a pickle: loading it runs code stored in the file. "
            "If you trust its origin, pass --trust-pickle"
        )


def find_state_dict(loaded: Any) -> Mapping[str, "torch.Tensor"] | None:
    """The tensors of a state_dict, or of a checkpoint that nests one: under "state_dict"/"model_state_dict", else
    under the only key that holds a mapping of tensors (Resemblyzer's "model_state" beside its optimizer's)."""
    if not isinstance(loaded, Mapping):
        return None
    for key in ("state_dict", "model_state_dict"):
        if isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if _all_tensors(loaded):
        return loaded
    nested = [value for value in loaded.values() if _all_tensors(value)]
    return nested[0] if len(nested) == 1 else None


def _all_tensors(value: Any) -> bool:
    import torch

    return isinstance(value, Mapping) and bool(value) \
        and all(isinstance(tensor, torch.Tensor) for tensor in value.values())


def load_torchscript(path: Path) -> "torch.jit.ScriptModule":
    import torch

    # Re-tracing with the stored inputs gives the graph inputs their shapes; without stored inputs torch
    # only prints a warning, so ask for it only when the archive has them.
    has_traced_inputs = any(rest == "traced_inputs.pkl" for _, rest in archive_entries(path))
    with quiet_torch_deprecations():
        return torch.jit.load(str(path), map_location="cpu", _restore_shapes=has_traced_inputs)


def torchscript_input_names(module: "torch.jit.ScriptModule") -> list[str]:
    return [argument.name for argument in module.forward.schema.arguments[1:]]


def torchscript_input_specs(module: "torch.jit.ScriptModule") -> tuple[TensorSpec, ...]:
    """Input specs from the graph's input types; empty unless every input has a known shape and dtype."""
    graph_inputs = list(module.graph.inputs())[1:]
    specs = []
    for name, graph_input in zip(torchscript_input_names(module), graph_inputs):
        tensor_type = graph_input.type()
        sizes = tensor_type.sizes() if hasattr(tensor_type, "sizes") else None
        dtype = tensor_type.dtype() if hasattr(tensor_type, "dtype") else None
        if sizes is None or dtype is None:
            return ()
        specs.append(TensorSpec(name, static_shape(sizes), dtype_name(dtype)))
    return tuple(specs)


def output_specs(module: "torch.nn.Module", example: tuple["torch.Tensor", ...]) -> tuple[TensorSpec, ...]:
    """Output specs found by running the module once; names are output_0, output_1, ... in pytree order."""
    import torch
    from torch.utils._pytree import tree_leaves

    with torch.no_grad():
        leaves = [leaf for leaf in tree_leaves(module(*example)) if isinstance(leaf, torch.Tensor)]
    return tuple(
        TensorSpec(f"output_{index}", tuple(leaf.shape), dtype_name(leaf.dtype)) for index, leaf in enumerate(leaves)
    )
