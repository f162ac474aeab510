"""Run functions of the litert-torch steps. torch, torchao and litert-torch are imported inside functions only.

The TFLite model's signature ("serving_default") names its inputs after the program's user inputs, so a backend
can feed samples by name; inputs and outputs keep the program's layout (NCHW for a CNN).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hub.declarations import StepContext, defaults_of
from hub.errors import MissingDependencyError, StepFailedError
from hub.states import TensorSpec
from hub_litert_torch import INT8_OPTIONS

if TYPE_CHECKING:
    import torch
    from torch.export import ExportedProgram


def convert_program_to_tflite(ctx: StepContext) -> Path:
    """torch-export -> float32 .tflite with litert_torch.convert."""
    litert_torch = _import_litert_torch()
    program, names, example = _program_and_example(ctx, "litert-torch")
    edge_model = litert_torch.convert(named_input_module(program, names), sample_kwargs=example)
    output = ctx.workdir / "model.fp32.tflite"
    edge_model.export(str(output))
    ctx.notes.update(converter=f"litert-torch {litert_torch.__version__}", **_io_notes(output))
    return output


def quantize_program_to_tflite(ctx: StepContext) -> Path:
    """torch-export -> full-integer int8 .tflite: PT2E prepare, calibrate on ctx.calibration, convert, lower."""
    import torch

    litert_torch = _import_litert_torch()
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    options = {**defaults_of(INT8_OPTIONS), **ctx.options}
    program, names, example = _program_and_example(ctx, "litert-torch-int8")
    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=bool(options["per_channel"])))
    graph_module = torch.export.export(named_input_module(program, names), (), example).module()
    prepared = prepare_pt2e(graph_module, quantizer)
    feeds = calibration_feeds(ctx, names, example, options)
    with torch.no_grad():
        for feed in feeds:
            prepared(**feed)
    quantized = convert_pt2e(prepared, fold_quantize=False)
    edge_model = litert_torch.convert(quantized, sample_kwargs=example,
                                      quant_config=QuantConfig(pt2e_quantizer=quantizer))
    output = ctx.workdir / "model.int8.tflite"
    edge_model.export(str(output))
    io_notes = _io_notes(output)
    ctx.notes.update(converter=f"litert-torch {litert_torch.__version__}", quantizer="PT2E symmetric",
                     per_channel=bool(options["per_channel"]), calibration_samples=len(feeds), **io_notes)
    io_types = set(io_notes["input_dtypes"] + io_notes["output_dtypes"])
    if io_types != {str(options["io_dtype"])}:
        raise StepFailedError(f"litert-torch's int8 model has {', '.join(sorted(io_types))} inputs and outputs, not "
                              f"the {options['io_dtype']} asked for (PT2E quantizes the I/O itself: int8 only)")
    if options["full_integer"]:
        from hub_litert.interpreter import float_operators

        stayed_float = float_operators(output)
        if stayed_float:
            raise StepFailedError(f"litert-torch could not make the model fully integer: {len(stayed_float)} "
                                  "operator(s) stayed float: " + "; ".join(stayed_float))
    return output


def named_input_module(program: "ExportedProgram", names: list[str]) -> "torch.nn.Module":
    """The program as a module taking its user inputs as keyword arguments named after them: litert-torch then
    names the TFLite signature's inputs the same way (positional sample_args would give args_0, args_1, ...)."""
    import torch

    from hub_torch.tensors import call_program

    class NamedInputModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.program = program.module()

        def forward(self, **inputs: torch.Tensor) -> Any:
            return call_program(program, self.program, [inputs[name] for name in names])

    # no .eval(): program.module() refuses train() and eval(); the exported graph is already in eval mode
    return NamedInputModule()


def calibration_feeds(ctx: StepContext, names: list[str], example: dict[str, "torch.Tensor"],
                      options: dict[str, Any]) -> list[dict[str, "torch.Tensor"]]:
    """Batch-1 keyword feeds from ctx.calibration (by input name; a single array serves a single input), else
    seeded random ones like the example, with a warning in the notes."""
    import torch

    if ctx.calibration is None:
        count = int(options["random_calibration_samples"])
        generator = torch.Generator().manual_seed(int(options["seed"]))
        ctx.notes["calibration_source"] = "random"
        ctx.notes["warning"] = (f"no calibration data given: activation ranges come from {count} random inputs; "
                                "pass a calibration .npz for a faithful int8 model")
        return [{name: (torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
                        if tensor.is_floating_point() else tensor) for name, tensor in example.items()}
                for _ in range(count)]
    ctx.notes["calibration_source"] = Path(ctx.calibration).name
    return [{name: torch.from_numpy(np.ascontiguousarray(feed[name])).to(example[name].dtype) for name in names}
            for feed in ctx.calibration_feeds(int(options["max_calibration_samples"]))]


def _import_litert_torch() -> Any:
    try:
        import litert_torch
    except ModuleNotFoundError as error:
        raise MissingDependencyError("litert-torch is not installed: pip install 'conversion-hub[litert-torch]'",
                                     detail=str(error)) from error
    return litert_torch


def _program_and_example(ctx: StepContext, step: str) -> tuple["ExportedProgram", list[str], dict[str, Any]]:
    from hub_torch.tensors import example_tensors, load_program, program_input_names, program_input_specs

    program = load_program(ctx.input_path)
    names = program_input_names(program)
    specs = ctx.inputs or program_input_specs(program)
    if len(specs) != len(names):
        specs = program_input_specs(program)
    example = dict(zip(names, example_tensors(tuple(TensorSpec(n, s.shape, s.dtype) for n, s in zip(names, specs)),
                                              step)))
    return program, names, example


def _io_notes(model: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    return {"input_dtypes": [np.dtype(d["dtype"]).name for d in interpreter.get_input_details()],
            "output_dtypes": [np.dtype(d["dtype"]).name for d in interpreter.get_output_details()],
            "signature_inputs": interpreter.get_signature_list().get("serving_default", {}).get("inputs", [])}
