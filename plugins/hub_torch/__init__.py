"""The built-in PyTorch plugin: torch.export, TorchScript and torch.save formats, the torch -> ONNX exporters,
compressors on torch.export programs (magnitude pruning, weight clipping, channel pruning, distillation) and an
eager PyTorch backend. This module holds declarations only; it imports neither torch nor onnx."""
from __future__ import annotations

from hub.declarations import Backend, Format, Option, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement
from hub_torch.options import (CHANNEL_OPTIONS, CLIP, CLIP_OPTIONS, DISTILL, DISTILL_OPTIONS, PRUNE, PRUNE_CHANNELS,
                              PRUNE_OPTIONS)

# ONNX Runtime 1.32 and its quantizer handle both. The dynamo exporter writes 18 natively (its default, 20, is
# newer than some consumers read); the TorchScript exporter is most tested at 17.
DYNAMO_OPSET = 18
LEGACY_OPSET = 17
OPSET_DOC = "the ONNX opset to export to"

TORCH = "torch>=2.5"
ONNX = "onnx>=1.16"
ONNXSCRIPT = "onnxscript>=0.5"
TORCH_PRUNING = "torch-pruning>=1.5"


@hookimpl
def hub_formats() -> list[Format]:
    return [
        Format(
            name="torch-export",
            detect="hub_torch.detect:is_torch_export",
            describe="hub_torch.describe:describe_torch_export",
            extensions=(".pt2",),
            description="torch.export ExportedProgram archive (torch.export.save)",
            requires=(TORCH,),
            extra="torch",
            object_types=("torch.nn.modules.module.Module",),
            save_object="hub_torch.memory:save_module",
        ),
        Format(
            name="torchscript",
            detect="hub_torch.detect:is_torchscript",
            describe="hub_torch.describe:describe_torchscript",
            extensions=(".pt", ".pth", ".torchscript"),
            description="TorchScript archive (torch.jit.save)",
            requires=(TORCH,),
            extra="torch",
        ),
        Format(
            name="torch-pickle",
            detect="hub_torch.detect:is_torch_pickle",
            describe="hub_torch.describe:describe_torch_pickle",
            extensions=(".pt", ".pth", ".pkl", ".bin"),
            description="torch.save pickle: a whole nn.Module or a state_dict",
            executes_code=True,
            requires=(TORCH,),
            extra="torch",
        ),
    ]


@hookimpl
def hub_converters() -> list[Step]:
    # Cost terms: about 3 s of each is importing torch in a fresh worker. Measured on a 24 MB CNN (torch 2.13,
    # CPU): dynamo export 1.4 s, trace 0.2 s, TorchScript export 0.2 s; time follows op count more than size.
    fp32 = "fp32"
    return [
        Step(
            name="torch-dynamo-export",
            accepts=Requirement.of(format="torch-export", precision=fp32),
            produces={"format": "onnx", "graph": "raw"},
            run="hub_torch.export:export_program_to_onnx",
            description="ExportedProgram -> ONNX with torch.onnx.export(dynamo=True)",
            seconds=6.0,
            seconds_per_mb=0.03,
            options=(Option("opset", int, DYNAMO_OPSET, OPSET_DOC),),
            requires=(TORCH, ONNX, ONNXSCRIPT),
            extra="torch",
        ),
        Step(
            name="torch-trace-to-torchscript",
            accepts=Requirement.of(format="torch-export", precision=fp32),
            produces={"format": "torchscript", "graph": "raw"},
            run="hub_torch.export:trace_program_to_torchscript",
            description="ExportedProgram -> TorchScript with torch.jit.trace (a fallback route to ONNX)",
            seconds=3.0,
            seconds_per_mb=0.01,
            requires=(TORCH,),
            extra="torch",
        ),
        Step(
            name="torchscript-onnx-export",
            accepts=Requirement.of(format="torchscript", precision=fp32),
            produces={"format": "onnx", "graph": "raw"},
            run="hub_torch.export:export_torchscript_to_onnx",
            description="TorchScript -> ONNX with the TorchScript (legacy) exporter",
            seconds=3.0,
            seconds_per_mb=0.02,
            options=(Option("opset", int, LEGACY_OPSET, OPSET_DOC),),
            requires=(TORCH, ONNX),
            extra="torch",
        ),
        Step(
            name="torch-pickle-export",
            accepts=Requirement.of(format="torch-pickle", precision=fp32),
            produces={"format": "torch-export", "graph": "raw"},
            run="hub_torch.export:export_pickle_to_program",
            description="torch.save pickle (module, or state_dict + model_factory) -> torch.export archive",
            seconds=5.0,
            seconds_per_mb=0.02,
            requires=(TORCH,),
            extra="torch",
        ),
    ]


@hookimpl
def hub_compressors() -> list[Step]:
    # Pruning is offered both here and on ONNX (hub_onnx); pruning before export is the cheaper edge so a torch
    # source prunes in torch: 2 s less than the ONNX step, and distillation (torch only) can follow it. Sizes:
    # zeros are stored at full width in .pt2 and .onnx, so the file does not shrink (notes give the gzip size).
    fp32_program = Requirement.of(format="torch-export", precision="fp32")
    return [
        Step(
            name="torch-magnitude-prune",
            min_cosine=0.8,
            accepts=fp32_program,
            produces={"traits": "+pruned"},
            run="hub_torch.prune:magnitude_prune",
            description="zero the smallest conv/linear weights (L1 magnitude, global or per layer; first and "
                        "depthwise layers exempt by default) in the ExportedProgram's parameters",
            seconds=4.0, seconds_per_mb=0.02, fidelity_loss=0.02, size_ratio=1.0,
            options=PRUNE_OPTIONS, satisfies=(PRUNE,),
            requires=(TORCH,), extra="torch",
        ),
        Step(
            name="torch-weight-clip",
            min_cosine=0.8,
            accepts=fp32_program,
            produces={"traits": "+clipped"},
            run="hub_torch.prune:clip_weights",
            description="zero every conv/linear weight whose magnitude is below `threshold`",
            seconds=4.0, seconds_per_mb=0.02, fidelity_loss=0.005, size_ratio=1.0,
            options=CLIP_OPTIONS, satisfies=(CLIP,),
            requires=(TORCH,), extra="torch",
        ),
        Step(
            name="torch-channel-prune",
            min_cosine=0.0,
            accepts=fp32_program,
            produces={"traits": "+channels-pruned"},
            run="hub_torch.prune:channel_prune",
            description="remove whole channels with Torch-Pruning (dependency graph, L1 importance) and "
                        "re-export: a smaller, faster model",
            seconds=8.0, seconds_per_mb=0.1, fidelity_loss=0.05, size_ratio=0.6,
            options=CHANNEL_OPTIONS, satisfies=(PRUNE_CHANNELS,),
            requires=(TORCH, TORCH_PRUNING), extra="pruning",
        ),
        # Two distillation edges, one per compression it recovers from: a Requirement names the traits a state
        # must have, so "pruned or channels-pruned" is two steps with one run function.
        *[Step(
            name=f"torch-distill{suffix}",
            accepts=Requirement.of(format="torch-export", precision="fp32", traits=trait),
            produces={"traits": "+distilled"},
            run="hub_torch.distill:distill",
            description=f"train the {trait} model on the source's outputs (KL on softened logits + MSE) and, "
                        "where the graphs match, on the inputs of its pruned layers, for a bounded number of CPU "
                        "steps (AdamW, cosine decay; image samples randomly cropped and flipped), pruned weights "
                        "kept at zero; from halfway on at int8-rounded weights when the route goes on to int8",
            seconds=120.0, seconds_per_mb=5.0, fidelity_loss=0.0, size_ratio=1.0,
            options=DISTILL_OPTIONS, satisfies=(DISTILL,),
            wants_later_precisions=True, time_budget_option="max_seconds",
            requires=(TORCH,), extra="torch", timeout=1800.0,
        ) for suffix, trait in (("", "pruned"), ("-channels", "channels-pruned"))],
    ]


@hookimpl
def hub_backends() -> list[Backend]:
    return [
        Backend(
            name="torch",
            formats=frozenset({"torch-export", "torchscript"}),
            run="hub_torch.backend:run",
            latency="hub_torch.backend:latency",
            description="eager PyTorch on the CPU",
            requires=(TORCH,),
            extra="torch",
        )
    ]
