"""The built-in PyTorch plugin: torch.export, TorchScript and torch.save formats, the torch -> ONNX exporters and
an eager PyTorch backend. This module holds declarations only; it imports neither torch nor onnx."""
from __future__ import annotations

from hub.declarations import Backend, Format, Step
from hub.hookspecs import hookimpl
from hub.states import Requirement

# ONNX Runtime 1.32 and its quantizer handle both. The dynamo exporter writes 18 natively (its default, 20, is
# newer than some consumers read); the TorchScript exporter is most tested at 17.
DYNAMO_OPSET = 18
LEGACY_OPSET = 17

TORCH = "torch>=2.5"
ONNX = "onnx>=1.16"
ONNXSCRIPT = "onnxscript>=0.5"


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
            options={"opset": DYNAMO_OPSET},
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
            options={"opset": LEGACY_OPSET},
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
