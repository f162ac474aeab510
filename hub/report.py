"""The conversion report: what was planned, what ran, what it cost and how close the result stays.
Its JSON form (Report.to_json) is documented in the README; scripts rely on its keys."""
from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.verify import Fidelity

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StepRecord:
    name: str
    plugin: str
    kind: str
    state: str
    seconds: float
    bytes: int
    fidelity: Fidelity | None
    cached: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    verify_seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "name": self.name, "plugin": self.plugin, "kind": self.kind, "state": self.state,
            "seconds": round(self.seconds, 3), "verify_seconds": round(self.verify_seconds, 3),
            "bytes": self.bytes, "cached": self.cached,
            "fidelity": self.fidelity.to_json() if self.fidelity else None, "notes": self.notes,
        }


@dataclass(frozen=True)
class RouteFailure:
    route: list[str]
    step: str
    reason: str
    detail: str | None = None
    steps: tuple[StepRecord, ...] = ()  # the steps that ran on this route, the failing one when it got verified

    def to_json(self) -> dict:
        return {"route": self.route, "failed_step": self.step, "reason": self.reason,
                "detail": (self.detail or "")[-2000:] or None, "steps": [s.to_json() for s in self.steps]}


@dataclass(frozen=True)
class FinalRecord:
    path: str
    format: str
    state: str
    bytes: int
    backend: str
    latency_ms: float | None
    source_latency_ms: float | None
    fidelity: Fidelity | None
    platform_checks: list[Any] = field(default_factory=list)
    distributions: list[dict] = field(default_factory=list)  # hub.distributions.output_distributions

    def to_json(self) -> dict:
        return {
            "path": self.path, "format": self.format, "state": self.state, "bytes": self.bytes,
            "backend": self.backend, "latency_ms": _ms(self.latency_ms),
            "source_latency_ms": _ms(self.source_latency_ms),
            "fidelity": self.fidelity.to_json() if self.fidelity else None,
            "platform_checks": [c.to_json() for c in self.platform_checks],
            "distributions": self.distributions,
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass
class Report:
    source: dict[str, Any]
    target: dict[str, Any]
    samples: dict[str, Any]
    planned: list[dict]
    cost_weights: dict[str, float]
    route: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    final: FinalRecord | None = None
    alternatives_tried: list[RouteFailure] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # why a failed conversion failed; None in the report of one that succeeded

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA_VERSION,
            "source": self.source,
            "target": self.target,
            "route": self.route,
            "steps": [s.to_json() for s in self.steps],
            "final": self.final.to_json() if self.final else None,
            "alternatives_tried": [f.to_json() for f in self.alternatives_tried],
            "planned_routes": self.planned,
            "cost_weights": self.cost_weights,
            "samples": self.samples,
            "versions": self.versions,
            "warnings": self.warnings,
            "error": self.error,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def compressed_size(path: Path) -> dict[str, int]:
    """A file's size and its gzip size: pruning zeros a dense file without shrinking it, but it compresses."""
    counter = _ByteCounter()
    with open(path, "rb") as source, gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6, mtime=0) as zipped:
        shutil.copyfileobj(source, zipped)
    return {"bytes": path.stat().st_size, "gzip_bytes": counter.count}


class _ByteCounter:
    """A write-only sink that only counts, so gzip sizes need no temporary file."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def artifact_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
