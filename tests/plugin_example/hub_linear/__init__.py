"""A third-party plugin, packaged on its own: a format for linear models stored as .npz (weight, bias), a
converter from it to ONNX, a compressor that `--compress round:DECIMALS` requests, a numpy backend that runs it,
and a target. It knows the hub only through the `hub` entry-point group and the public declarations."""
from __future__ import annotations

from hub.declarations import Backend, Format, Option, Request, Step, Target, Tolerance
from hub.hookspecs import hookimpl
from hub.states import Requirement


@hookimpl
def hub_formats() -> list[Format]:
    return [Format(name="linear-npz", detect="hub_linear.model:is_linear_npz",
                   describe="hub_linear.model:describe", extensions=(".npz",),
                   description="y = x @ weight.T + bias, stored as an .npz with a hub_linear marker")]


@hookimpl
def hub_converters() -> list[Step]:
    return [Step(name="linear-to-onnx", accepts=Requirement.of(format="linear-npz"),
                 produces={"format": "onnx", "graph": "raw"}, run="hub_linear.model:to_onnx",
                 description="writes the linear model as one ONNX Gemm node", seconds=0.5,
                 requires=("onnx>=1.16",))]


@hookimpl
def hub_compressors() -> list[Step]:
    return [Step(name="linear-round", accepts=Requirement.of(format="linear-npz", precision="fp32"),
                 produces={"traits": "+rounded"}, run="hub_linear.model:round_weights",
                 description="rounds the weights to a number of decimals (a compressor's smallest example)",
                 seconds=0.2, fidelity_loss=0.001, min_cosine=0.99,
                 options=(Option("decimals", int, 2, "decimals kept in each weight"),),
                 satisfies=(Request("round", "traits", "rounded", "decimals",
                                    "round the linear model's weights to this many decimals (e.g. round:1)"),))]


@hookimpl
def hub_backends() -> list[Backend]:
    return [Backend(name="numpy-linear", formats=frozenset({"linear-npz"}), run="hub_linear.model:run",
                    description="evaluates the linear model with numpy")]


@hookimpl
def hub_targets() -> list[Target]:
    return [Target(name="linear-onnx", backend="onnxruntime", requires=Requirement.of(format="onnx"),
                   tolerance=Tolerance(min_cosine=0.99999), description="the linear model as plain ONNX")]
