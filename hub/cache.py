"""Content-addressed cache of step outputs.

A key is the SHA-256 of everything that decides a step's output: the input artifact's bytes, the step's
name and options, the calibration data, the versions of the hub, the plugin's distribution and the libraries
the step requires, and a digest of the plugin's own code (a short or partial key once served a peer tool the
wrong model). An entry is
written in a scratch folder and renamed into place, so a reader never sees a half-written one.
"""
from __future__ import annotations

import hashlib
import importlib.util
import importlib.metadata as metadata
import json
import os
import shutil
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement as PackageRequirement

CHUNK = 1 << 20


def default_cache_root() -> Path:
    configured = os.environ.get("HUB_CACHE")
    if configured:  # absolute: workers run in folders of their own, where a relative path means something else
        return Path(configured).expanduser().absolute()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "conversion-hub"


def digest_path(path: Path) -> str:
    """SHA-256 of a file, or of a folder's relative paths and file contents in sorted order."""
    hasher = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            hasher.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
    return hasher.hexdigest()


def distribution_versions(requirements: tuple[str, ...]) -> dict[str, str]:
    versions = {"conversion-hub": _version("conversion-hub")}
    for text in requirements:
        try:
            name = PackageRequirement(text).name
        except InvalidRequirement:
            continue
        versions[name] = _version(name)
    return versions


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=None)
def code_digest(reference: str) -> str:
    """SHA-256 of the Python files of the package holding `reference` ("package.module:function"), found without
    importing it: editing a plugin's code invalidates its cached results even when its version stays the same."""
    spec = importlib.util.find_spec(reference.split(":")[0].split(".")[0])
    if spec is None:
        return "absent"
    if not spec.submodule_search_locations:
        return digest_path(Path(spec.origin)) if spec.origin and Path(spec.origin).is_file() else "unknown"
    folder = Path(next(iter(spec.submodule_search_locations)))
    hasher = hashlib.sha256()
    for file in sorted(folder.rglob("*.py")):
        hasher.update(str(file.relative_to(folder)).encode() + b"\0" + file.read_bytes())
    return hasher.hexdigest()


def step_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class StepCache:
    """Step outputs by key under ROOT/steps/KEY/{artifact/NAME, meta.json}; meta.json is written last."""

    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        self.root = Path(root).expanduser().absolute() if root else default_cache_root()
        self.enabled = enabled

    def lookup(self, key: str) -> tuple[Path, dict] | None:
        if not self.enabled:
            return None
        entry = self.root / "steps" / key
        meta_path = entry / "meta.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        artifact = entry / "artifact" / meta["artifact"]
        return (artifact, meta) if artifact.exists() else None

    def store(self, key: str, artifact: Path, meta: dict) -> Path:
        """Copy the artifact into the cache; returns the cached path (someone else's, if they won a race)."""
        if not self.enabled:
            return artifact
        final = self.root / "steps" / key
        scratch = self.root / "tmp" / f"{key}-{uuid.uuid4().hex}"
        (scratch / "artifact").mkdir(parents=True)
        copy_artifact(artifact, scratch / "artifact" / artifact.name)
        (scratch / "meta.json").write_text(json.dumps({**meta, "artifact": artifact.name}, default=str))
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(scratch, final)
        except OSError:  # an entry with this key landed first; it holds the same content
            shutil.rmtree(scratch, ignore_errors=True)
        found = self.lookup(key)
        return found[0] if found else artifact


    def recall(self, key: str) -> Any:
        """A remembered JSON measurement (a description, a fidelity, a latency), or None."""
        path = self.root / "memo" / f"{key}.json"
        if not self.enabled or not path.exists():
            return None
        return json.loads(path.read_text())

    def remember(self, key: str, value: Any) -> Any:
        if self.enabled:
            path = self.root / "memo" / f"{key}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            partial.write_text(json.dumps(value, default=str))
            os.replace(partial, path)
        return value


def copy_artifact(source: Path, destination: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, destination, symlinks=False)
    else:
        shutil.copy2(source, destination)
