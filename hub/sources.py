"""What the user handed us: a model file (format detected from its content) or an in-memory model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.archives import is_archive, unpack_model_archive
from hub.declarations import Format
from hub.errors import UnsupportedModelError, UsageError
from hub.plugins import Catalog
from hub.report import artifact_bytes
from hub.states import STATE_ATTRIBUTES, ModelState
from hub.worker import resolve


@dataclass(frozen=True)
class Source:
    path: Path
    format: Format
    state: ModelState
    bytes: int


def detect_source(catalog: Catalog, path: Path, scratch: Path | None = None) -> Source:
    """Find the format of a model file from its content; UnsupportedModelError when no plugin claims it.
    An archive no format claims is unpacked (safely) into `scratch` and its content detected instead."""
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise UnsupportedModelError(f"{path} is empty: it is not a model file")
    detected = _detect(catalog, path)
    if detected is None and scratch is not None and is_archive(path):
        inner = unpack_model_archive(path, scratch / "unpacked")
        detected = _detect(catalog, inner)
    if detected is not None:
        return detected
    known = ", ".join(f"{f.name} ({', '.join(f.extensions) or 'folder'})" for f in catalog.formats.values())
    raise UnsupportedModelError(
        f"{path} is not a model in any format the hub knows ({known}); if it is truncated or corrupt, "
        "export it again; if it is another format, install the plugin for it (see `hub plugins`)")


def _detect(catalog: Catalog, path: Path) -> Source | None:
    for name in sorted(catalog.formats):
        model_format = catalog.formats[name]
        try:
            detected = resolve(model_format.detect)(path)
        except Exception:  # a detector that raises on a foreign file has simply not recognised it
            continue
        if detected:
            attributes = {k: v for k, v in (detected if isinstance(detected, dict) else {}).items()
                          if k in STATE_ATTRIBUTES and k != "format"}
            return Source(path.resolve(), model_format, ModelState(format=name, **attributes), artifact_bytes(path))
    return None


def class_names(obj: Any) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__}


def save_in_memory_model(catalog: Catalog, obj: Any, example_inputs: Any, folder: Path) -> Path:
    """Write an in-memory model (e.g. a torch.nn.Module) as a file, through the format plugin that owns it."""
    names = class_names(obj)
    for model_format in catalog.formats.values():
        if model_format.save_object and names & set(model_format.object_types):
            if example_inputs is None:
                raise UsageError(f"an in-memory {type(obj).__name__} needs example_inputs= to be exported")
            path = folder / f"model{model_format.extensions[0] if model_format.extensions else ''}"
            resolve(model_format.save_object)(obj, example_inputs, path)
            return path
    raise UsageError(f"no installed plugin can take an in-memory {type(obj).__qualname__}; pass a file path")
