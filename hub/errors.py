"""The errors the hub raises. Each message says what went wrong and how to fix it; `detail` keeps the
library's own words (shown with --debug). `exit_code` is what the `hub` command exits with."""
from __future__ import annotations


class HubError(Exception):
    """Base class of every error the hub raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UsageError(HubError):
    """A flag, option or input file the user gave cannot be used as given."""

    exit_code = 2


class UnsupportedModelError(HubError):
    """The model file is unknown, corrupt, or needs a permission the user has not given."""

    exit_code = 2


class UnknownTargetError(UsageError):
    """The target named is in neither registry.yaml nor any plugin."""


class MissingDependencyError(HubError):
    """A library a step, format or backend needs is not installed."""

    exit_code = 3


class NoRouteError(HubError):
    """No chain of installed steps leads from the source to the target."""

    exit_code = 4


class StepFailedError(HubError):
    """Every route was tried and each failed at some step (raised, crashed, timed out, or drifted)."""

    exit_code = 5


class FidelityError(StepFailedError):
    """A step's output drifted from the source beyond the target's tolerance."""


class StepDeclinedError(StepFailedError):
    """A step looked at its input and declined it before doing any work, because another route handles such
    input (onnx2tf's channels-last steps decline inputs that are channels-last already). The route still fails,
    but does not count against the number of routes tried (--max-routes)."""


class PluginError(HubError):
    """A plugin declared something the core cannot use (bad reference, duplicate name)."""

    exit_code = 6
