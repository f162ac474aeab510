"""conversion-hub: plan, run and verify model conversion routes from any framework to a device backend.

    import hub
    result = hub.convert("model.pt2", to="cpu-int8", calibration="calib.npz", output="out/")
    print(result.path, result.report.final.fidelity)

Importing hub imports no framework; plugins import theirs inside the worker processes that run steps.
"""
from __future__ import annotations

from typing import Any

from hub.errors import (FidelityError, HubError, MissingDependencyError, NoRouteError, PluginError,
                        StepDeclinedError, StepFailedError, UnknownTargetError, UnsupportedModelError, UsageError)

__all__ = [
    "convert", "plan", "inspect", "batch", "HubError", "NoRouteError", "StepFailedError", "FidelityError",
    "UnsupportedModelError", "UnknownTargetError", "MissingDependencyError", "UsageError", "PluginError",
    "StepDeclinedError",
]


def __getattr__(name: str) -> Any:
    # the API module pulls in numpy and the planner: load it on first use, not on `import hub`
    if name in ("convert", "plan", "inspect", "ConversionResult", "PlanResult"):
        from hub import api

        return getattr(api, name)
    if name in ("batch", "BatchResult"):
        from hub import batching

        return getattr(batching, name)
    raise AttributeError(f"module 'hub' has no attribute {name!r}")
