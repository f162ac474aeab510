"""Hub-managed Python environments: where plugins whose dependencies conflict with the hub's own run their code.

A plugin declares an Environment (name, requirements) and names it on its steps, backends or formats. `hub env
create NAME` builds it once: a venv under $HUB_ENVIRONMENTS_DIR (default: the cache root's `environments/`) with
the requirements and the hub's core dependencies installed, and the hub's and the declaring plugins' packages
linked into its site-packages, so `python -m hub.worker` runs there with the same code as in the parent. Workers
for those declarations start with its interpreter; artifacts cross over as files as everywhere else.
"""
from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from hub.declarations import Environment
from hub.errors import MissingDependencyError, StepFailedError, UsageError

if TYPE_CHECKING:
    from hub.plugins import Catalog

MARKER = "hub-environment.json"
CORE_PACKAGES = ("hub",)
FALLBACK_CORE_REQUIREMENTS = ("numpy>=1.24", "packaging>=23", "pluggy>=1.3", "pyyaml>=6", "rich>=13")
INSTALL_TIMEOUT = 3600


def environments_root() -> Path:
    configured = os.environ.get("HUB_ENVIRONMENTS_DIR")
    if configured:
        return Path(configured).expanduser().absolute()
    from hub.cache import default_cache_root

    return default_cache_root() / "environments"


def location(name: str) -> Path:
    return environments_root() / name


def interpreter(name: str) -> Path:
    return location(name) / "bin" / "python"


def is_created(environment: Environment) -> bool:
    """Built, and built for the requirements declared now (a plugin upgrade that changes them needs a rebuild)."""
    marker = location(environment.name) / MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("requirements") == list(environment.requirements) and interpreter(environment.name).exists()


def python_for(catalog: Catalog, name: str | None) -> str | None:
    """The interpreter a declaration's worker runs with: None for the hub's own, else the environment's."""
    if name is None:
        return None
    environment = catalog.environments.get(name)
    if environment is None:
        raise MissingDependencyError(f"no installed plugin declares the environment {name!r} (see `hub plugins`)")
    if not is_created(environment):
        raise MissingDependencyError(
            f"this needs the hub-managed {name!r} environment, which is not created yet: run `hub env create {name}` "
            f"once (it installs {', '.join(environment.requirements)} into {location(name)})")
    return str(interpreter(name))


def create(catalog: Catalog, name: str, log: TextIO = sys.stderr) -> str:
    """Build (or rebuild) an environment; returns a one-line description. Quick when it is already current."""
    environment = catalog.environments.get(name)
    if environment is None:
        known = ", ".join(sorted(catalog.environments)) or "none"
        raise UsageError(f"no installed plugin declares an environment {name!r}; environments: {known}")
    if not is_created(environment):
        _build(environment, _packages_for(catalog, name), log)
    return f"{location(name)} ({_describe(environment)})"


def _build(environment: Environment, packages: list[str], log: TextIO) -> None:
    final = location(environment.name)
    building = final.with_name(f".{environment.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    print(f"creating environment {environment.name!r} in {final}: {', '.join(environment.requirements)}",
          file=log, flush=True)
    try:
        _run([sys.executable, "-m", "venv", str(building)], log)
        python = building / "bin" / "python"
        _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              *environment.requirements, *_core_requirements()], log)
        _link_packages(python, packages)
        (building / MARKER).write_text(json.dumps({"requirements": list(environment.requirements),
                                                   "packages": packages}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        building.rename(final)  # the venv resolves its prefix from where it lies, so it survives the move
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _run(command: list[str], log: TextIO) -> None:
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=INSTALL_TIMEOUT)
    if result.returncode != 0:
        print(result.stdout[-4000:], file=log)
        raise StepFailedError(f"creating the environment failed: {' '.join(command[:4])} ... exited with "
                              f"{result.returncode}", detail=result.stdout[-4000:])


def _core_requirements() -> list[str]:
    """The hub's own dependencies (no extras): what `python -m hub.worker` imports."""
    try:
        declared = metadata.requires("conversion-hub") or []
    except metadata.PackageNotFoundError:
        return list(FALLBACK_CORE_REQUIREMENTS)
    return [r for r in declared if "extra ==" not in r]


def _packages_for(catalog: Catalog, name: str) -> list[str]:
    """Folders of the hub's package and of the packages of plugins that declare or use the environment."""
    modules = list(CORE_PACKAGES)
    for record in catalog.plugins:
        users = [*record.formats, *record.converters, *record.compressors, *record.backends]
        if any(e.name == name for e in record.environments) or any(d.environment == name for d in users):
            modules.append(record.module.split(".")[0])
    folders = []
    for module in dict.fromkeys(modules):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise UsageError(f"cannot locate the package {module!r} to link into the environment")
        folders.append(str(Path(next(iter(spec.submodule_search_locations))).resolve()))
    return folders


def _link_packages(python: Path, folders: list[str]) -> None:
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    for folder in folders:
        link = Path(site_packages) / Path(folder).name
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(folder, target_is_directory=True)


def _describe(environment: Environment) -> str:
    return environment.description or ", ".join(environment.requirements)
