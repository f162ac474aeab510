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
from hub.contract import ContractError, check_declarations, request_conflict
from hub.declarations import Backend, Environment, Format, Option, Request, Step, Target

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

    @property
    def steps(self) -> list[Step]:
        return self.converters + self.compressors

    def declares(self, name: str) -> bool:
        """Whether this plugin declared a format, step, backend, target or environment of that name."""
        return any(item.name == name for items in (self.formats, self.steps, self.backends, self.targets,
                                                     self.environments) for item in items)


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
    requests: dict[str, Request] = field(default_factory=dict)  # what `--compress NAME` can ask for

    def step_kind(self, name: str) -> str:
        for record in self.plugins:
            if any(s.name == name for s in record.compressors):
                return "compressor"
        return "converter"

    @property
    def broken(self) -> list[PluginRecord]:
        return [record for record in self.plugins if record.error]

    def broken_owner(self, name: str) -> PluginRecord | None:
        """The broken plugin that declared `name` (as far as it got), if any."""
        return next((record for record in self.broken if record.declares(name)), None)

    def request_option(self, request: str) -> Option | None:
        """The option a request's value sets, as the first step satisfying it declares it."""
        for step in self.steps.values():
            for satisfied in step.satisfies:
                if satisfied.name == request and satisfied.option:
                    return step.option(satisfied.option)
        return None


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


def _check(record: PluginRecord, backend_names: set[str]) -> None:
    """Mark the record broken with the first declaration that breaks the contract."""
    try:
        check_declarations(record.formats, record.steps, record.backends, record.targets, record.environments)
        for target in record.targets:
            if target.backend not in backend_names:
                raise ContractError(f"target {target.name!r} runs on backend {target.backend!r}, which no plugin "
                                    "declares")
    except ContractError as error:
        record.error = f"invalid declaration: {error}"


def _clash(record: PluginRecord, catalog: Catalog) -> str | None:
    """Why the record cannot join the catalog beside the plugins indexed before it (None when it can)."""
    for kind, items, table in [
        ("format", record.formats, catalog.formats),
        ("step", record.steps, catalog.steps),
        ("backend", record.backends, catalog.backends),
        ("environment", record.environments, catalog.environments),
    ]:
        for item in items:
            if item.name in table:
                return (f"declares the {kind} {item.name!r}, which plugin {catalog.owner[item.name]!r} declared "
                        "first; uninstall one of them")
    for step in record.steps:
        for request in step.satisfies:
            known = catalog.requests.get(request.name)
            conflict = request_conflict(known, request) if known else None
            if conflict:
                return conflict
            known_option = catalog.request_option(request.name) if known else None
            option = step.option(request.option) if request.option else None
            if known_option and option and known_option.type is not option.type:
                return (f"request {request.name!r} sets {request.option} as a {option.type.__name__} here but as "
                        f"a {known_option.type.__name__} elsewhere")
    return None


def _index(records: list[PluginRecord], shipped: list[Target], user: list[tuple[Target, str]]) -> Catalog:
    """Index the working plugins' declarations: shipped registry targets, then plugins' (which replace them by
    name), then the user's registry files (which replace both)."""
    catalog = Catalog(records, {}, {}, {}, {t.name: t for t in shipped}, {t.name: "registry.yaml" for t in shipped})
    for record in records:
        if record.error:
            continue
        record.error = _clash(record, catalog)
        if record.error:
            continue
        for items, table in [(record.formats, catalog.formats), (record.steps, catalog.steps),
                             (record.backends, catalog.backends), (record.environments, catalog.environments),
                             (record.targets, catalog.targets)]:
            for item in items:
                table[item.name] = item
                catalog.owner[item.name] = record.name
        for step in record.steps:
            for request in step.satisfies:
                catalog.requests.setdefault(request.name, request)
    for target, origin in user:
        catalog.targets[target.name] = target
        catalog.owner[target.name] = origin
    return catalog


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """Discover plugins once per process: import each entry point, check hook names, index declarations."""
    from hub.registry import shipped_targets, user_targets

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
    backend_names = {backend.name for record in records for backend in record.backends}
    for record in records:
        if not record.error:
            _check(record, backend_names)
    return _index(records, shipped_targets(), user_targets())


def reset_catalog() -> None:
    load_catalog.cache_clear()
