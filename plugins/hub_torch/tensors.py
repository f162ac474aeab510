"""Torch helpers shared by the describe, export and backend modules. torch is imported inside functions only."""
from __future__ import annotations

import contextlib
import inspect
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from hub.errors import UsageError
from hub.states import TensorSpec

if TYPE_CHECKING:
    import torch
    from torch.export import ExportedProgram


@contextlib.contextmanager
def quiet_torch_deprecations() -> Iterator[None]:
    """Hide torch 2.13's deprecation notices for torch.jit (the TorchScript route is our deliberate fallback) and
    the FutureWarning torch.export.load raises from its own pickled tree specs: they say nothing about the model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="`isinstance.treespec, LeafSpec.`", category=FutureWarning)
        yield


def load_program(path: Path) -> "ExportedProgram":
    import torch

    with quiet_torch_deprecations():
        return torch.export.load(str(path))


def dtype_name(dtype: "torch.dtype") -> str:
    """numpy-style name of a torch dtype: torch.float32 -> "float32"."""
    return str(dtype).removeprefix("torch.")


def torch_dtype(name: str) -> "torch.dtype":
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"unknown tensor dtype {name!r}; use a numpy name such as float32 or int64")
    return dtype


def static_shape(sizes: Iterable[Any]) -> tuple[int | None, ...]:
    """Concrete sizes stay, symbolic (dynamic) sizes become None."""
    return tuple(size if isinstance(size, int) else None for size in sizes)


def example_tensors(specs: Sequence[TensorSpec], step: str) -> tuple["torch.Tensor", ...]:
    """One batch-1 example tensor per input spec (dynamic dimensions become 1).

    Values are random for floats and zeros for integers, so that index inputs (embeddings) stay in range.
    """
    import torch

    if not specs:
        raise UsageError(
            f"{step} needs the model's input shapes, which the model file does not record: "
            "pass them with --input NAME:SHAPE (e.g. --input x:1,3,224,224)"
        )
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for spec in specs:
        shape = tuple(1 if size is None else size for size in spec.shape)
        dtype = torch_dtype(spec.dtype)
        if dtype.is_floating_point:
            tensors.append(torch.rand(shape, generator=generator).to(dtype))
        else:
            tensors.append(torch.zeros(shape, dtype=dtype))
    return tuple(tensors)


def specs_from_options(options: Mapping[str, Any]) -> tuple[TensorSpec, ...]:
    """Input specs the user gave as options["inputs"]: a list of TensorSpec JSON objects (or TensorSpecs)."""
    given = options.get("inputs") or ()
    return tuple(spec if isinstance(spec, TensorSpec) else TensorSpec.from_json(spec) for spec in given)


def tensors_to_numpy(outputs: Any) -> list[np.ndarray]:
    """Every tensor in a (possibly nested) model output, in pytree order, as numpy arrays."""
    import torch
    from torch.utils._pytree import tree_leaves

    return [leaf.detach().cpu().numpy() for leaf in tree_leaves(outputs) if isinstance(leaf, torch.Tensor)]


def feed_tensors(sample: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple["torch.Tensor", ...]:
    """A sample's arrays in the model's input order; by name, or by position when the names differ."""
    import torch

    if all(name in sample for name in names):
        arrays = [sample[name] for name in names]
    else:
        arrays = list(sample.values())
    return tuple(torch.from_numpy(np.ascontiguousarray(array)) for array in arrays)


def program_input_names(program: "ExportedProgram") -> list[str]:
    return list(program.graph_signature.user_inputs)


def program_input_specs(program: "ExportedProgram") -> tuple[TensorSpec, ...]:
    nodes = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    return tuple(_node_spec(nodes[name]) for name in program.graph_signature.user_inputs)


def program_output_specs(program: "ExportedProgram") -> tuple[TensorSpec, ...]:
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    user_outputs = set(program.graph_signature.user_outputs)
    return tuple(
        _node_spec(node)
        for node in output_node.args[0]
        if getattr(node, "name", None) in user_outputs
    )


def _node_spec(node: Any) -> TensorSpec:
    value = node.meta.get("val")
    if value is None or not hasattr(value, "shape"):
        return TensorSpec(node.name, ())
    return TensorSpec(node.name, static_shape(value.shape), dtype_name(value.dtype))


def flat_input_module(program: "ExportedProgram") -> "torch.nn.Module":
    """The program as a module taking its user inputs as flat, named positional tensors and returning a flat
    tuple of tensors: the shape torch.jit.trace and the TorchScript ONNX exporter can handle (they reject dict or
    mixed outputs and keyword inputs)."""
    import torch
    from torch.utils._pytree import tree_leaves

    class FlatInputModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.program = program.module()

            def forward(*flat_inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return tuple(tree_leaves(call_program(program, self.program, flat_inputs)))

            # torch.jit.trace names the TorchScript inputs after this signature.
            positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
            forward.__signature__ = inspect.Signature(
                [inspect.Parameter(name, positional) for name in program_input_names(program)]
            )
            self.forward = forward

    return FlatInputModule()


def call_program(program: "ExportedProgram", module: "torch.nn.Module", flat_inputs: Sequence["torch.Tensor"]) -> Any:
    """Call program.module() with flat user inputs, rebuilding positional and keyword arguments."""
    from torch.utils._pytree import tree_unflatten

    args, kwargs = tree_unflatten(list(flat_inputs), program.call_spec.in_spec)
    return module(*args, **kwargs)
