"""The plugin contract. A plugin is a module with functions marked `@hookimpl`, named after the specs below,
registered through an entry point in group "hub":

    [project.entry-points.hub]
    my_plugin = "my_package.hub_plugin"

Every hook is called on every plugin and the lists are concatenated (none is firstresult). A hook returns
declarations only (see hub.declarations): cheap data, no framework import. Each declaration is checked when the
plugin loads (hub.contract); a plugin whose hook name matches no spec here, whose hook raises, or whose
declaration breaks the contract is marked broken with the reason (`hub plugins` shows it) and skipped.
"""
from __future__ import annotations

import pluggy

from hub.declarations import Backend, Environment, Format, Step, Target

PROJECT = "hub"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def hub_formats() -> list[Format]:
    """Model file formats this plugin can detect and describe.

    Called once when plugins load. Format names are global: a plugin declaring a name another plugin declared
    first is marked broken.
    """


@hookspec
def hub_converters() -> list[Step]:
    """Steps that change a model's format (e.g. torch-export -> onnx).

    Called once when plugins load. Each step becomes an edge of the planner's graph from every state its
    `accepts` matches. Its options (Option), the compression requests it satisfies (Request) and the state
    attributes it produces are checked then.
    """


@hookspec
def hub_compressors() -> list[Step]:
    """Steps that change a model's precision or graph without changing its format (quantizers, clean-ups).

    Same contract as hub_converters; listed apart so `hub plugins` can say which is which.
    """


@hookspec
def hub_backends() -> list[Backend]:
    """Runtimes that execute models: used to verify every step and to measure the final latency."""


@hookspec
def hub_targets() -> list[Target]:
    """Targets beyond those in registry.yaml. A plugin target with the name of a registry target replaces it."""


@hookspec
def hub_environments() -> list[Environment]:
    """Separate Python environments this plugin's steps, backends or formats run in (see Environment).

    Environment names are global, like format names.
    """
