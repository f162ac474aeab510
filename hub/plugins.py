"""Plugin discovery: every plugin, built-in or third-party, comes from an entry point in group "hub"
(plus module names in $HUB_PLUGINS, for trying a plugin without packaging it). Nothing here imports a framework:
availability is read from installed distributions' metadata.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType

import pluggy
from packaging.requirements import InvalidRequirement, Requirement as PackageRequirement

from hub import hookspecs
from hub.declarations import Backend, Environment, Format, Step, Target
from hub.errors import PluginError

ENTRY_POINT_GROUP = "hub"
OWN_DISTRIBUTION = "conversion-hub"


@dataclass
class PluginRecord:
    """One discovered plugin and what it contributed (or the error that kept it out)."""

    name: str
    module: str
    origin: str  # "built-in", a distribution name and version, or "$HUB_PLUGINS"
    error: str | None = None
    formats: list[Format] = field(default_factory=list)
    converters: list[Step] = field(default_factory=list)
    compressors: list[Step] = field(default_factory=list)
    backends: list[Backend] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    environments: list[Environment] = field(default_factory=list)


@dataclass
class Catalog:
    """Everything the plugins declared, indexed by name."""

    plugins: list[PluginRecord]
    formats: dict[str, Format]
    steps: dict[str, Step]
    backends: dict[str, Backend]
    targets: dict[str, Target]
    owner: dict[str, str]  # declaration name -> plugin name
    environments: dict[str, Environment] = field(default_factory=dict)

    def step_kind(self, name: str) -> str:
        for record in self.plugins:
            if any(s.name == name for s in record.compressors):
                return "compressor"
        return "converter"


def missing_requirements(requires: tuple[str, ...]) -> list[str]:
    """The requirement strings not satisfied by installed distributions."""
    missing = []
    for text in requires:
        try:
            requirement = PackageRequirement(text)
        except InvalidRequirement:
            missing.append(text)
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{text} (found {version})")
    return missing


def missing_for(declared: Format | Step | Backend, catalog: Catalog) -> list[str]:
    """What keeps a declaration from running here: its unmet requirements, or its environment not created yet."""
    if not declared.environment:
        return missing_requirements(declared.requires)
    from hub.environments import is_created

    environment = catalog.environments.get(declared.environment)
    if environment is None:
        return [f"environment {declared.environment!r} (no installed plugin declares it)"]
    return [] if is_created(environment) else [f"environment {environment.name!r}"]


def install_hint(extra: str | None, missing: list[str]) -> str:
    environments = [m.split("'")[1] for m in missing if m.startswith("environment '")]
    if environments:
        return " and ".join(f"hub env create {name}" for name in environments)
    if extra:
        return f"pip install 'conversion-hub[{extra}]'"
    return "pip install " + " ".join(f"'{m.split(' (')[0]}'" for m in missing)


def _entry_point_modules() -> list[tuple[str, str, str]]:
    found = []
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        if dist is not None and dist.metadata["Name"] == OWN_DISTRIBUTION:
            origin = "built-in"
        elif dist is not None:
            origin = f"{dist.metadata['Name']} {dist.version}"
        else:
            origin = "unknown distribution"
        found.append((entry_point.name, entry_point.value, origin))
    for module_name in filter(None, os.environ.get("HUB_PLUGINS", "").split(",")):
        found.append((module_name.strip().rsplit(".", 1)[-1], module_name.strip(), "$HUB_PLUGINS"))
    return sorted(set(found), key=lambda item: (item[2] != "built-in", item[0]))


def _collect(manager: pluggy.PluginManager, module: ModuleType, record: PluginRecord) -> None:
    caller = manager.subset_hook_caller
    others = [p for p in manager.get_plugins() if p is not module]
    for hook_name, attribute in [
        ("hub_formats", "formats"),
        ("hub_converters", "converters"),
        ("hub_compressors", "compressors"),
        ("hub_backends", "backends"),
        ("hub_targets", "targets"),
        ("hub_environments", "environments"),
    ]:
        for declared in caller(hook_name, remove_plugins=others)():
            getattr(record, attribute).extend(declared or [])


def _index(records: list[PluginRecord], targets_from_registry: list[Target]) -> Catalog:
    catalog = Catalog(records, {}, {}, {}, {t.name: t for t in targets_from_registry},
                      {t.name: "registry.yaml" for t in targets_from_registry})
    for record in records:
        if record.error:
            continue
        for kind, items, table in [
            ("format", record.formats, catalog.formats),
            ("step", record.converters + record.compressors, catalog.steps),
            ("backend", record.backends, catalog.backends),
            ("environment", record.environments, catalog.environments),
        ]:
            for item in items:
                if item.name in table:
                    raise PluginError(
                        f"plugins {catalog.owner[item.name]!r} and {record.name!r} both declare the {kind} "
                        f"{item.name!r}; uninstall one of them"
                    )
                table[item.name] = item
                catalog.owner[item.name] = record.name
        for target in record.targets:
            catalog.targets[target.name] = target
            catalog.owner[target.name] = record.name
    return catalog


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """Discover plugins once per process: import each entry point, check hook names, index declarations."""
    from hub.registry import registry_targets

    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    records = []
    for name, module_name, origin in _entry_point_modules():
        record = PluginRecord(name=name, module=module_name, origin=origin)
        records.append(record)
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # a broken plugin is listed with its error, never fatal
            record.error = f"{type(error).__name__}: {error}"
            continue
        try:
            manager.register(module, name=name)
            manager.check_pending()  # a misspelled hook name fails here instead of doing nothing
            _collect(manager, module, record)
        except Exception as error:
            if manager.is_registered(module):
                manager.unregister(module)
            record.error = f"{type(error).__name__}: {error}"
    return _index(records, registry_targets())


def reset_catalog() -> None:
    load_catalog.cache_clear()
