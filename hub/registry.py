"""Targets declared as data: the shipped registry.yaml (at the repository's top level; in a wheel, hub/data/), then
the user's registry files ($HUB_REGISTRY, `--registry FILE`), which add targets or replace them by name."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from hub.declarations import Target, Tolerance
from hub.errors import UsageError
from hub.states import Requirement

USER_REGISTRY_VARIABLE = "HUB_REGISTRY"
TARGET_KEYS = {"backend", "requires", "tolerance", "description", "options"}
SHIPPED = "registry.yaml"


def target_from_mapping(name: str, data: Mapping[str, Any], origin: str = SHIPPED) -> Target:
    """A target from its registry entry; UsageError naming the file and the target when it is malformed."""
    try:
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a mapping of {', '.join(sorted(TARGET_KEYS))}, got {data!r}")
        unknown = set(data) - TARGET_KEYS
        if unknown:
            raise KeyError(f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(TARGET_KEYS))}")
        return Target(
            name=name,
            backend=str(data["backend"]),
            requires=Requirement.of(**data["requires"]),
            tolerance=Tolerance(**data.get("tolerance", {})),
            description=str(data.get("description", "")),
            options=dict(data.get("options", {})),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"target {name!r} in {origin} is malformed: {error}") from error


def targets_from_text(text: str, origin: str) -> list[Target]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{origin} is not valid YAML: {error}".replace("\n", " ")) from error
    if not isinstance(document, Mapping) or not isinstance(document.get("targets"), Mapping):
        raise UsageError(f"{origin} has no `targets:` mapping (see the target schema in README.md)")
    return [target_from_mapping(str(name), data, origin) for name, data in document["targets"].items()]


def shipped_targets() -> list[Target]:
    packaged = resources.files("hub").joinpath("data", SHIPPED)
    if packaged.is_file():
        return targets_from_text(packaged.read_text(encoding="utf-8"), SHIPPED)
    beside = Path(__file__).resolve().parent.parent / SHIPPED  # a source checkout or an editable install
    return targets_from_text(beside.read_text(encoding="utf-8"), SHIPPED)


def user_registry_files() -> list[Path]:
    """The files of $HUB_REGISTRY (separated by os.pathsep), in order: a later file wins."""
    return [Path(item) for item in os.environ.get(USER_REGISTRY_VARIABLE, "").split(os.pathsep) if item.strip()]


def user_targets() -> list[tuple[Target, str]]:
    """Each user registry file's targets with the file they came from."""
    found = []
    for path in user_registry_files():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot read the registry file {path} (from ${USER_REGISTRY_VARIABLE} or "
                             f"--registry): {error.strerror}") from error
        found += [(target, str(path)) for target in targets_from_text(text, str(path))]
    return found


def add_registry_files(paths: list[str]) -> None:
    """Append files to $HUB_REGISTRY for this process (and its workers): `--registry FILE`."""
    if paths:
        current = [item for item in os.environ.get(USER_REGISTRY_VARIABLE, "").split(os.pathsep) if item]
        os.environ[USER_REGISTRY_VARIABLE] = os.pathsep.join(current + [str(Path(p).resolve()) for p in paths])
