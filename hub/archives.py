"""Model archives (.zip, .tar, .tar.gz of a model folder such as a SavedModel), unpacked defensively: no
member may land outside the destination, links and device files are refused, and the total unpacked size
and member count are bounded (counted as bytes are written, not as the archive claims)."""
from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from hub.errors import UnsupportedModelError

MAX_UNPACKED_BYTES = int(os.environ.get("HUB_MAX_UNPACKED_BYTES", 8 << 30))
MAX_MEMBERS = 100_000
CHUNK = 1 << 20


def is_archive(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)
    except Exception:  # a damaged header is simply not an archive
        return False


def _safe_relative(name: str, archive: Path) -> PurePosixPath:
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or (relative.parts and ":" in relative.parts[0]):
        raise UnsupportedModelError(f"{archive} holds a member {name!r} that would be written outside the "
                                    "folder it is unpacked into; refusing the archive")
    return relative


class _Budget:
    def __init__(self, archive: Path) -> None:
        self.archive, self.bytes, self.members = archive, 0, 0

    def count_member(self) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise UnsupportedModelError(f"{self.archive} holds more than {MAX_MEMBERS} members; refusing it")

    def copy(self, source: IO[bytes], destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(destination, "wb") as out:
            while chunk := source.read(CHUNK):
                self.bytes += len(chunk)
                if self.bytes > MAX_UNPACKED_BYTES:
                    raise UnsupportedModelError(
                        f"{self.archive} unpacks to more than {MAX_UNPACKED_BYTES >> 20} MB; refusing it "
                        "(raise the bound with HUB_MAX_UNPACKED_BYTES if it is genuine)")
                out.write(chunk)


def _unpack_zip(archive: Path, destination: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as opened:
        for info in opened.infolist():
            budget.count_member()
            relative = _safe_relative(info.filename, archive)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsupportedModelError(f"{archive} holds a symbolic link {info.filename!r}; refusing it")
            if info.is_dir():
                (destination / relative).mkdir(parents=True, exist_ok=True)
                continue
            with opened.open(info) as member:
                budget.copy(member, destination / relative)


def _unpack_tar(archive: Path, destination: Path, budget: _Budget) -> None:
    with tarfile.open(archive) as opened:
        for member in opened:
            budget.count_member()
            relative = _safe_relative(member.name, archive)
            if member.isdir():
                (destination / relative).mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                extracted = opened.extractfile(member)
                if extracted is not None:
                    budget.copy(extracted, destination / relative)
            else:
                raise UnsupportedModelError(f"{archive} holds {member.name!r}, a link or special file; refusing it")


def unpack_model_archive(archive: Path, destination: Path) -> Path:
    """Unpack into destination and return the model inside: the single top-level entry, or the folder."""
    destination.mkdir(parents=True, exist_ok=True)
    budget = _Budget(archive)
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, destination, budget)
        else:
            _unpack_tar(archive, destination, budget)
    except UnsupportedModelError:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    except Exception as error:  # zlib.error, CRC mismatches, bad names: any damage is the file's, not ours
        shutil.rmtree(destination, ignore_errors=True)
        raise UnsupportedModelError(f"{archive} is a damaged archive: {type(error).__name__}: {error}") from error
    entries = list(destination.iterdir())
    return entries[0] if len(entries) == 1 else destination
