"""Compression requests (`--prune 0.5`, `--compress prune:0.5,int4-weights`, `--distill SAMPLES`) turned into
constraints on the final state plus options for the steps that meet them. The planner then decides where in
the route each compressor runs, like any other step."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hub.declarations import Target
from hub.errors import NoRouteError, UsageError


@dataclass(frozen=True)
class RequestKind:
    attribute: str           # the state attribute it constrains: "traits" or "precision"
    value: str               # the trait that must be present, or the precision required
    option: str | None       # the option name its argument becomes (None: takes no argument)
    description: str


REQUEST_KINDS = {
    "prune": RequestKind("traits", "pruned", "sparsity",
                         "global magnitude pruning to this fraction of zero weights (e.g. prune:0.5)"),
    "prune-channels": RequestKind("traits", "channels-pruned", "sparsity",
                                  "structured pruning: remove this fraction of channels (e.g. prune-channels:0.3)"),
    "clip": RequestKind("traits", "clipped", "threshold", "zero every weight whose magnitude is below this value"),
    "distill": RequestKind("traits", "distilled", "samples",
                           "train the compressed model on the source's outputs for these unlabelled samples"),
    "int4-weights": RequestKind("precision", "int4", None, "4-bit weight-only quantization of MatMul/Gemm"),
    "fp16": RequestKind("precision", "fp16", None, "float16 weights and activations"),
    "int8": RequestKind("precision", "int8", None, "static int8"),
}


@dataclass(frozen=True)
class CompressionRequest:
    kind: str
    argument: str | None = None

    @classmethod
    def parse(cls, text: str) -> "CompressionRequest":
        name, _, argument = text.strip().partition(":")
        if name not in REQUEST_KINDS:
            raise UsageError(f"unknown compression {name!r}; known: {', '.join(REQUEST_KINDS)}")
        kind = REQUEST_KINDS[name]
        if kind.option and not argument:
            raise UsageError(f"--compress {name} needs a value: {name}:VALUE ({kind.description})")
        if kind.option == "sparsity" and not 0 < float(argument) < 1:
            raise UsageError(f"{name}:{argument}: the fraction must be between 0 and 1")
        return cls(name, argument or None)

    def option_value(self) -> Any:
        kind = REQUEST_KINDS[self.kind]
        if kind.option in ("sparsity", "threshold"):
            return float(self.argument)  # type: ignore[arg-type]
        if kind.option == "samples":  # workers run in their own folder: hand them an absolute path
            path = Path(self.argument).resolve()  # type: ignore[arg-type]
            if not path.exists():
                raise UsageError(f"--distill {self.argument}: no such file (an .npz of unlabelled inputs)")
            return str(path)
        return self.argument


@dataclass(frozen=True)
class ConstrainedTarget:
    target: Target
    trait_options: dict[str, dict[str, Any]] = field(default_factory=dict)


def apply_requests(target: Target, requests: list[CompressionRequest]) -> ConstrainedTarget:
    """The target with each request's constraint added; a request the target cannot satisfy is a NoRouteError
    at planning time, with the reason."""
    requires = target.requires
    trait_options: dict[str, dict[str, Any]] = {}
    for request in requests:
        kind = REQUEST_KINDS[request.kind]
        narrowed = requires.narrowed(kind.attribute, [kind.value])
        if not narrowed.allowed[kind.attribute]:
            allowed = ", ".join(sorted(requires.allowed[kind.attribute]))
            raise NoRouteError(f"{request.kind} asks for {kind.attribute} {kind.value}, but target {target.name!r} "
                               f"runs only {kind.attribute} {allowed}: choose a target that runs {kind.value} "
                               "(see `hub targets`) or drop the request")
        requires = narrowed
        if kind.option:
            trait_options.setdefault(kind.value, {})[kind.option] = request.option_value()
    return ConstrainedTarget(replace(target, requires=requires), trait_options)
