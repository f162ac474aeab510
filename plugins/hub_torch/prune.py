"""Pruning steps on torch.export archives: magnitude pruning and weight clipping (zeros in place, same graph) and
structured channel pruning with Torch-Pruning (smaller layers, re-exported). torch is imported inside functions.

Magnitude pruning and clipping edit the ExportedProgram's parameters in place and save the same program again:
the weights of convolutions and linear layers are found from the graph (the second argument of aten.conv*/linear
nodes), so no nn.Module is needed. The zeros are permanent: the saved tensors hold them, no mask or
re-parametrization is left behind.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.declarations import StepContext
from hub.errors import MissingDependencyError, StepFailedError, UsageError
from hub import kit
from hub.kit import exempt_layers, magnitude_threshold
from hub.report import compressed_size
from hub.states import TensorSpec
from hub_torch.options import CHANNEL_DEFAULTS, CLIP_DEFAULTS, PRUNE_DEFAULTS
from hub_torch.tensors import example_tensors, load_program, program_input_specs, quiet_torch_deprecations

if TYPE_CHECKING:
    import torch
    from torch.export import ExportedProgram

CONV_OPS = ("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
LINEAR_OPS = ("linear",)


@dataclass(frozen=True)
class WeightLayer:
    """A parameter used as the weight of a convolution or a linear layer, in graph order."""

    name: str              # its key in program.state_dict
    op: str                # the aten op that uses it
    groups: int
    shape: tuple[int, ...]

    @property
    def depthwise(self) -> bool:
        # one input channel per group and as many groups as output channels (or a multiple): a depthwise conv
        return self.op.startswith("conv") and self.groups > 1 and len(self.shape) > 2 and self.shape[1] == 1


def magnitude_prune(ctx: StepContext) -> Path:
    """torch-export fp32 -> +pruned: zero the smallest-magnitude weights until `sparsity` of the prunable
    weights are zero, over all layers at once (scope "global") or in each layer (scope "layer")."""
    import torch

    options = {**PRUNE_DEFAULTS, **ctx.options}
    sparsity = _fraction(options["sparsity"], "sparsity")
    scope = str(options["scope"])
    if scope not in ("global", "layer"):
        raise UsageError(f"option scope={scope!r} is not one of: global, layer")
    program = load_program(ctx.input_path)
    layers = weight_layers(program)
    prunable, exempt = split_exempt(layers, options)
    weights = program.state_dict
    with torch.no_grad():
        if scope == "global" and prunable:
            magnitudes = torch.cat([weights[layer.name].detach().abs().flatten() for layer in prunable])
            threshold = kth_smallest(magnitudes, sparsity)
            for layer in prunable:
                zero_below(weights[layer.name], threshold)
        for layer in prunable if scope == "layer" else ():
            tensor = weights[layer.name]
            zero_below(tensor, kth_smallest(tensor.detach().abs().flatten(), sparsity))
    output = save_program(program, ctx.workdir / "model.pt2")
    ctx.notes.update(method=f"magnitude (L1), {scope}", requested_sparsity=sparsity,
                     **sparsity_notes(weights, layers, prunable, exempt), **compressed_size(output))
    return output


def clip_weights(ctx: StepContext) -> Path:
    """torch-export fp32 -> +clipped: zero every convolution/linear weight whose magnitude is below `threshold`."""
    import torch

    options = {**CLIP_DEFAULTS, **ctx.options}
    threshold = float(options["threshold"])
    if threshold <= 0:
        raise UsageError(f"option threshold={threshold} must be positive")
    program = load_program(ctx.input_path)
    layers = weight_layers(program)
    prunable, exempt = split_exempt(layers, options)
    weights = program.state_dict
    with torch.no_grad():
        for layer in prunable:
            tensor = weights[layer.name]
            tensor.masked_fill_(tensor.abs() < threshold, 0.0)
    output = save_program(program, ctx.workdir / "model.pt2")
    ctx.notes.update(method="clip |w| < threshold", threshold=threshold,
                     **sparsity_notes(weights, layers, prunable, exempt), **compressed_size(output))
    return output


def channel_prune(ctx: StepContext) -> Path:
    """torch-export fp32 -> +channels-pruned: remove `sparsity` of the channels of every prunable layer with
    Torch-Pruning (dependency graph, L1 magnitude importance), then torch.export the smaller model again.

    Torch-Pruning cannot take program.module() as it is: that GraphModule calls aten.conv2d/linear/batch_norm as
    functions on bare parameters (Torch-Pruning finds layers as nn.Conv2d/nn.Linear/nn.BatchNorm modules and
    calls .eval(), which the unlifted module forbids). So the graph is first rebuilt with real modules in place of
    those calls (`modules_from_program`): same parameters, same arithmetic, a module Torch-Pruning can trace.
    """
    import torch

    try:
        import torch_pruning as tp
    except ImportError as error:
        raise MissingDependencyError("channel pruning needs Torch-Pruning: pip install 'conversion-hub[pruning]'",
                                     detail=str(error)) from error
    options = {**CHANNEL_DEFAULTS, **ctx.options}
    sparsity = _fraction(options["sparsity"], "sparsity")
    program = load_program(ctx.input_path)
    example = example_tensors(ctx.inputs or program_input_specs(program), "torch-channel-prune")
    module = modules_from_program(program)
    with torch.no_grad():
        reference = module(*example)
    parameters_before = sum(p.numel() for p in module.parameters())
    ignored = output_layers(module) if options["exempt_output_layers"] else []
    pruner = tp.pruner.MagnitudePruner(
        module, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=sparsity,
        ignored_layers=ignored, round_to=int(options["round_to"]) if int(options["round_to"]) > 1 else None,
    )
    pruner.step()
    parameters_after = sum(p.numel() for p in module.parameters())
    with torch.no_grad():
        pruned_output = module(*example)
    if _shapes(pruned_output) != _shapes(reference):
        raise StepFailedError("channel pruning changed the model's output shapes: exempt the layers that produce "
                              "them (option exempt_output_layers)")
    pruned_program = export_like_source(module, export_specs(program, ctx.inputs))
    output = save_program(pruned_program, ctx.workdir / "model.pt2")
    widths = {name: getattr(m, "out_channels", getattr(m, "out_features", None))
              for name, m in module.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d,
                                                                      torch.nn.Conv3d, torch.nn.Linear))}
    ctx.notes.update(method="Torch-Pruning MagnitudePruner, L1 importance, dependency graph",
                     requested_channel_sparsity=sparsity, parameters_before=parameters_before,
                     parameters_after=parameters_after,
                     parameter_ratio=round(parameters_after / max(parameters_before, 1), 4),
                     exempt_layers={name: "produces a model output" for name in _module_names(module, ignored)},
                     output_widths=dict(list(widths.items())[:kit.LAYERS_IN_NOTES]), **compressed_size(output))
    return output


def export_specs(program: "ExportedProgram", given: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """The program's own input specs, which keep its dynamic dimensions (the step's given inputs have them
    fixed, e.g. a batch of 1); the given ones where the program does not record shapes."""
    own = program_input_specs(program)
    return own if own and all(spec.shape for spec in own) else given or own


def export_like_source(module: "torch.nn.Module", specs: tuple[TensorSpec, ...]) -> "ExportedProgram":
    """torch.export the pruned module keeping the source's dynamic dimensions (a dynamic batch stays dynamic, so
    distillation can train on batches). Examples have size 2 there: a size of 1 would be specialised away."""
    import torch

    example = example_tensors([TensorSpec(spec.name, tuple(2 if size is None else size for size in spec.shape),
                                          spec.dtype) for spec in specs], "torch-channel-prune")
    dynamic = tuple({axis: torch.export.Dim.AUTO for axis, size in enumerate(spec.shape) if size is None}
                    for spec in specs)
    with quiet_torch_deprecations():
        if not any(dynamic):
            return torch.export.export(module, example)
        return torch.export.export(module, example, dynamic_shapes=dynamic)


# ---- finding and pruning weights ---------------------------------------------------------------------------------

def weight_layers(program: "ExportedProgram") -> list[WeightLayer]:
    """The parameters used as convolution or linear weights, in the order the graph uses them."""
    parameter_of = dict(program.graph_signature.inputs_to_parameters)
    layers, seen = [], set()
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        op = _aten_name(node.target)
        if op not in CONV_OPS + LINEAR_OPS or len(node.args) < 2:
            continue
        name = parameter_of.get(getattr(node.args[1], "name", None))
        if name is None or name in seen:
            continue
        seen.add(name)
        groups = _conv_groups(op, node)
        layers.append(WeightLayer(name, op, groups, tuple(program.state_dict[name].shape)))
    return layers


def split_exempt(layers: list[WeightLayer], options: dict[str, Any]) -> tuple[list[WeightLayer], dict[str, str]]:
    """The layers to prune, and the exempt ones with the reason."""
    exempt = exempt_layers([(layer.name, layer.depthwise) for layer in layers], options)
    return [layer for layer in layers if layer.name not in exempt], exempt


def kth_smallest(magnitudes: "torch.Tensor", fraction: float) -> float:
    """The magnitude at or below which `fraction` of the values lie (-1: none)."""
    return magnitude_threshold(magnitudes.detach().cpu().numpy(), fraction)


def zero_below(tensor: "torch.Tensor", threshold: float) -> None:
    """Zero the values of `tensor` at or below `threshold` (ties at the threshold are all zeroed: with
    continuous weights they are rare, and the notes report the sparsity actually reached)."""
    if threshold >= 0:
        tensor.masked_fill_(tensor.abs() <= threshold, 0.0)


def sparsity_notes(weights: dict, layers: list[WeightLayer], prunable: list[WeightLayer],
                   exempt: dict[str, str]) -> dict[str, Any]:
    layer_zeros = {layer.name: (int((weights[layer.name] == 0).sum()), weights[layer.name].numel())
                   for layer in layers}
    parameters = sum(t.numel() for t in weights.values())
    return kit.sparsity_notes(layer_zeros, {layer.name for layer in prunable}, exempt, parameters)


def save_program(program: "ExportedProgram", path: Path) -> Path:
    import torch

    with quiet_torch_deprecations():
        torch.export.save(program, str(path))
    return path


# ---- a module Torch-Pruning can trace -----------------------------------------------------------------------------

def modules_from_program(program: "ExportedProgram") -> "torch.nn.Module":
    """program.module() with every aten conv2d/conv1d/linear/batch_norm call on parameters replaced by a real
    nn.Conv*/nn.Linear/nn.BatchNorm* module holding those parameters (the same numbers), and without the guard
    call. The result is a plain fx GraphModule: trainable, traceable by Torch-Pruning, exportable again."""
    from torch import fx, nn

    unlifted = program.module()
    with quiet_torch_deprecations():
        graph = copy.deepcopy(unlifted.graph)  # keeps the program's pytree calling convention (its codegen)
    root = nn.Module()
    for name, parameter in unlifted.named_parameters():
        _set_path(root, name, parameter)
    for name, buffer in unlifted.named_buffers():
        _set_path(root, name, buffer, buffer=True)
    counter = 0
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
            continue
        if node.op != "call_function":
            continue
        built = _module_for(node, root)
        if built is None:
            continue
        counter += 1
        # named after the layer the weight came from ("features.0.weight" -> "features_0")
        module_name = str(node.args[1].target).rpartition(".")[0].replace(".", "_") or f"layer_{counter}"
        if hasattr(root, module_name):
            module_name = f"{module_name}_{counter}"
        root.add_module(module_name, built)
        with graph.inserting_before(node):
            replacement = graph.call_module(module_name, (node.args[0],))
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    rebuilt = fx.GraphModule(root, graph)
    _drop_unused(rebuilt)
    return rebuilt


def _module_for(node: Any, root: "torch.nn.Module") -> "torch.nn.Module | None":
    from torch import nn

    op = _aten_name(node.target)
    args = list(node.args)

    def attr(value: Any) -> Any:
        if getattr(value, "op", None) != "get_attr":
            return None
        return _get_path(root, value.target)

    if op in ("conv1d", "conv2d", "conv3d"):
        weight, bias = attr(args[1]), attr(args[2]) if len(args) > 2 and args[2] is not None else None
        if weight is None or (len(args) > 2 and args[2] is not None and bias is None):
            return None
        dims = int(op[-2])
        given, defaults = args[3:], (1, 0, 1, 1)  # stride, padding ("same"/"valid" too), dilation, groups
        stride, padding, dilation, groups = (given[i] if i < len(given) else defaults[i] for i in range(4))
        conv_class = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        module = conv_class(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=stride,
                            padding=padding, dilation=dilation, groups=groups, bias=bias is not None)
        module.weight = weight
        if bias is not None:
            module.bias = bias
        return module
    if op == "linear":
        weight = attr(args[1])
        bias = attr(args[2]) if len(args) > 2 and args[2] is not None else None
        if weight is None or (len(args) > 2 and args[2] is not None and bias is None):
            return None
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        module.weight = weight
        if bias is not None:
            module.bias = bias
        return module
    if op == "batch_norm" and len(args) >= 8 and args[5] is False:
        weight, bias, mean, var = (attr(a) for a in args[1:5])
        if any(t is None for t in (weight, bias, mean, var)):
            return None
        rank = node.args[0].meta.get("val").dim() if "val" in node.args[0].meta else 4
        norm_class = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
        if norm_class is None:
            return None
        module = norm_class(weight.shape[0], eps=float(args[7]), momentum=float(args[6]))
        module.weight, module.bias = weight, bias
        module.running_mean, module.running_var = mean, var
        return module.eval()
    return None


def output_layers(module: "torch.nn.Module") -> list["torch.nn.Module"]:
    """The weight modules whose outputs reach a model output without passing another weight module: their
    output width is the model's, so they keep it."""
    from torch import nn

    weight_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    found: list = []
    output = next(node for node in module.graph.nodes if node.op == "output")
    pending, seen = list(output.all_input_nodes), set()
    while pending:
        node = pending.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module":
            target = module.get_submodule(node.target)
            if isinstance(target, weight_types):
                found.append(target)
                continue
        pending.extend(node.all_input_nodes)
    return found


def _drop_unused(module: Any) -> None:
    """Remove parameters and buffers that no node uses any more (their modules took them over)."""
    used = {node.target for node in module.graph.nodes if node.op in ("get_attr", "call_module")}
    for name, _ in list(module.named_parameters()) + list(module.named_buffers()):
        if name in used or any(name.startswith(prefix + ".") for prefix in used):
            continue
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        if leaf in parent._parameters:
            del parent._parameters[leaf]
        elif leaf in parent._buffers:
            del parent._buffers[leaf]


def _set_path(root: Any, dotted: str, value: Any, buffer: bool = False) -> None:
    from torch import nn

    *parents, leaf = dotted.split(".")
    owner = root
    for part in parents:
        if not hasattr(owner, part):
            owner.add_module(part, nn.Module())
        owner = getattr(owner, part)
    if buffer:
        owner.register_buffer(leaf, value)
    else:
        owner.register_parameter(leaf, value)


def _get_path(root: Any, dotted: str) -> Any:
    owner = root
    for part in dotted.split("."):
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return owner


def _module_names(module: Any, targets: list) -> list[str]:
    return [name for name, m in module.named_modules() if any(m is t for t in targets)]


def _shapes(outputs: Any) -> list[tuple[int, ...]]:
    from torch.utils._pytree import tree_leaves

    return [tuple(leaf.shape) for leaf in tree_leaves(outputs) if hasattr(leaf, "shape")]


def _aten_name(target: Any) -> str:
    """"conv2d" for torch.ops.aten.conv2d.default; "" for anything else."""
    name = getattr(target, "__name__", "") or ""
    if not str(getattr(target, "namespace", "aten")) == "aten":
        return ""
    return name.split(".")[0]


def _conv_groups(op: str, node: Any) -> int:
    if not op.startswith("conv"):
        return 1
    # conv{1,2,3}d(input, weight, bias, stride, padding, dilation, groups); convolution(..., transposed,
    # output_padding, groups); conv_transpose(input, weight, bias, stride, padding, output_padding, groups, ...)
    position = {"convolution": 8}.get(op, 6)
    value = node.args[position] if len(node.args) > position else node.kwargs.get("groups", 1)
    return int(value) if isinstance(value, int) else 1


def _fraction(value: Any, option: str) -> float:
    fraction = float(value)
    if not 0 <= fraction < 1:
        raise UsageError(f"option {option}={value} must be a fraction in [0, 1)")
    return fraction
