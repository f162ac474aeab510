"""Targets declared as data in registry.yaml."""
from __future__ import annotations

from importlib import resources
from typing import Any, Mapping

import yaml

from hub.declarations import Target, Tolerance
from hub.errors import PluginError
from hub.states import Requirement


def target_from_mapping(name: str, data: Mapping[str, Any]) -> Target:
    try:
        return Target(
            name=name,
            backend=data["backend"],
            requires=Requirement.of(**data["requires"]),
            tolerance=Tolerance(**data.get("tolerance", {})),
            description=data.get("description", ""),
            options=dict(data.get("options", {})),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise PluginError(f"target {name!r} in registry.yaml is malformed: {error}") from error


def registry_targets() -> list[Target]:
    text = resources.files("hub").joinpath("registry.yaml").read_text(encoding="utf-8")
    entries = yaml.safe_load(text)["targets"]
    return [target_from_mapping(name, data) for name, data in entries.items()]
