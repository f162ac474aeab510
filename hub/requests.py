"""Compression requests (`--compress prune:0.5,int4-weights`, `--prune 0.5`, `--distill SAMPLES`) turned into
constraints on the final state plus options for the steps that meet them. The planner then decides where in
the route each compressor runs, like any other step. The vocabulary is what the installed plugins' steps declare
they satisfy (Step.satisfies): the core knows no compression by name."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hub.declarations import Target
from hub.errors import NoRouteError, UsageError
from hub.plugins import Catalog


@dataclass(frozen=True)
class CompressionRequest:
    kind: str
    argument: Any = None  # the value for the request's option, converted to that option's type

    @classmethod
    def parse(cls, text: str, catalog: Catalog) -> "CompressionRequest":
        """`NAME` or `NAME:VALUE`; UsageError for a name no plugin offers or a value its option refuses."""
        name, _, argument = text.strip().partition(":")
        if name not in catalog.requests:
            raise UsageError(f"unknown compression {name!r}; known: {', '.join(sorted(catalog.requests)) or 'none'}"
                             " (`hub plugins --verbose` describes them)")
        request = catalog.requests[name]
        option = catalog.request_option(name)
        if option is None:
            if argument:
                raise UsageError(f"--compress {name} takes no value ({request.description})")
            return cls(name)
        if not argument:
            raise UsageError(f"--compress {name} needs a value: {name}:VALUE ({request.description})")
        return cls(name, option.coerce(argument, name))


@dataclass(frozen=True)
class ConstrainedTarget:
    target: Target
    trait_options: dict[str, dict[str, Any]] = field(default_factory=dict)


def apply_requests(target: Target, requests: list[CompressionRequest], catalog: Catalog) -> ConstrainedTarget:
    """The target with each request's constraint added; a request the target cannot satisfy is a NoRouteError
    at planning time, with the reason."""
    requires = target.requires
    trait_options: dict[str, dict[str, Any]] = {}
    for request in requests:
        kind = catalog.requests[request.kind]
        narrowed = requires.narrowed(kind.attribute, [kind.value])
        if not narrowed.allowed[kind.attribute]:
            allowed = ", ".join(sorted(requires.allowed[kind.attribute]))
            raise NoRouteError(f"{request.kind} asks for {kind.attribute} {kind.value}, but target {target.name!r} "
                               f"runs only {kind.attribute} {allowed}: choose a target that runs {kind.value} "
                               "(see `hub targets`) or drop the request")
        requires = narrowed
        if kind.option:
            trait_options.setdefault(kind.value, {})[kind.option] = request.argument
    return ConstrainedTarget(replace(target, requires=requires), trait_options)
