"""Content-based detection of Keras and TensorFlow models. Runs in the hub's own process: zipfile and h5py only,
never tensorflow or keras, and never raises."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# HDF5 puts its superblock at 0, 512, 1024, 2048... when a user block precedes it.
HDF5_SIGNATURE_OFFSETS = (0, 512, 1024, 2048)
KERAS_CONFIG = "config.json"
KERAS_MARKERS = ("model.weights.h5", "metadata.json")


def is_keras_archive(path: Path) -> bool:
    """A Keras 3 .keras file: a zip holding config.json and model.weights.h5 or metadata.json at its top."""
    try:
        path = Path(path)
        if not path.is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
        return KERAS_CONFIG in names and any(marker in names for marker in KERAS_MARKERS)
    except Exception:
        return False


def is_keras_h5(path: Path) -> bool:
    """A whole Keras model saved as HDF5 (not bare weights): the file has a model_config attribute."""
    try:
        return h5_model_config(Path(path)) is not None
    except Exception:
        return False


def is_savedmodel(path: Path) -> bool:
    """A SavedModel folder: saved_model.pb (or .pbtxt) at its top."""
    try:
        path = Path(path)
        return path.is_dir() and any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt"))
    except Exception:
        return False


def h5_model_config(path: Path) -> dict[str, Any] | None:
    """The parsed model_config attribute of a Keras HDF5 file, None for any other file."""
    if not path.is_file():
        return None
    with path.open("rb") as stream:
        head = stream.read(max(HDF5_SIGNATURE_OFFSETS) + len(HDF5_SIGNATURE))
    if not any(head[o:o + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE for o in HDF5_SIGNATURE_OFFSETS):
        return None
    import h5py

    with h5py.File(path, "r") as handle:
        text = handle.attrs.get("model_config")
    if text is None:
        return None
    return json.loads(text.decode() if isinstance(text, bytes) else text)
