"""Content-based detection of PyTorch files. Runs in the hub's own process: zipfile only, no torch, never raises."""
from __future__ import annotations

import zipfile
from pathlib import Path

# torch.save's legacy (non-zip) format pickles this number first; torch.serialization.MAGIC_NUMBER.
LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
PICKLE_PROTOCOL_OPCODE = 0x80


def archive_entries(path: Path) -> list[tuple[str, str]]:
    """(prefix, rest) for every entry of a zip archive; empty for anything that is not a readable zip file."""
    try:
        if not Path(path).is_file() or not zipfile.is_zipfile(path):
            return []
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # a detector must never raise on a foreign or corrupt file
        return []
    return [tuple(name.split("/", 1)) for name in names if "/" in name]


def is_torch_export(path: Path) -> bool:
    """A torch.export.save archive (.pt2): `<prefix>/archive_format` and `<prefix>/models/...`."""
    entries = archive_entries(path)
    has_format_marker = any(rest == "archive_format" for _, rest in entries)
    has_models = any(rest.startswith("models/") for _, rest in entries)
    return has_format_marker and has_models


def is_torchscript(path: Path) -> bool:
    """A torch.jit.save archive: `<prefix>/code/...` and `<prefix>/constants.pkl`."""
    entries = archive_entries(path)
    has_code = any(rest.startswith("code/") for _, rest in entries)
    has_constants = any(rest == "constants.pkl" for _, rest in entries)
    return has_code and has_constants


def is_torch_pickle(path: Path) -> bool:
    """A torch.save file: a zip with `<prefix>/data.pkl` and no TorchScript code, or the legacy pickle format."""
    entries = archive_entries(path)
    if entries:
        has_pickle = any(rest == "data.pkl" for _, rest in entries)
        has_code = any(rest.startswith("code/") for _, rest in entries)
        return has_pickle and not has_code
    return is_legacy_torch_pickle(path)


def is_legacy_torch_pickle(path: Path) -> bool:
    try:
        if not Path(path).is_file():
            return False
        with open(path, "rb") as stream:
            head = stream.read(32)
    except Exception:
        return False
    # Newer pickle protocols put a FRAME opcode before the magic number, so look a little way in.
    return len(head) > 0 and head[0] == PICKLE_PROTOCOL_OPCODE and LEGACY_MAGIC in head
