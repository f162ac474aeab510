"""Running a delivered model on another platform (e.g. arm64 under emulation) and proving it computes what
the local runtime computes: byte for byte for integer models, within a tight tolerance for float ones."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hub.declarations import Backend
from hub.errors import MissingDependencyError, UsageError
from hub.environments import python_for
from hub.plugins import Catalog, missing_for
from hub.states import EXACT_PRECISIONS, ModelState
from hub.worker import call_worker, load_outputs, resolve

FLOAT_RTOL, FLOAT_ATOL = 1e-4, 1e-5
LATENCY_REPEATS = 10


@dataclass(frozen=True)
class PlatformCheck:
    platform: str
    backend: str
    reference_backend: str
    exact: bool            # byte-for-byte comparison (integer models) rather than a tolerance
    matches: bool
    max_abs: float
    first_mismatch: str | None
    samples: int
    emulated_ms_per_inference: float | None
    runtime: str           # what prepare() said about the platform's runtime (CPU model, versions)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def platform_backends(catalog: Catalog) -> list[Backend]:
    return sorted((b for b in catalog.backends.values() if b.platform), key=lambda b: b.name)


def platform_backend(catalog: Catalog, platform: str, format_name: str) -> Backend:
    for backend in platform_backends(catalog):
        if backend.platform == platform and format_name in backend.formats:
            missing = missing_for(backend, catalog)
            if missing:
                raise MissingDependencyError(f"the {platform} check needs {', '.join(missing)}")
            return backend
    known = sorted({f"{b.platform} ({', '.join(sorted(b.formats))})" for b in platform_backends(catalog)})
    raise UsageError(f"no installed backend runs {format_name} on platform {platform!r}; "
                     f"platforms: {', '.join(known) or 'none (install a plugin that provides one)'}")


def is_prepared(backend: Backend) -> bool:
    return backend.prepared is None or bool(resolve(backend.prepared)())


def prepare(backend: Backend) -> str:
    """Set the platform's runtime up (once; later calls are quick) and describe it."""
    return str(resolve(backend.prepare)()) if backend.prepare else backend.description


def _run(catalog: Catalog, backend: Backend, model: Path, samples_path: Path, threads: int,
         timeout: float) -> list[list[np.ndarray]]:
    with tempfile.TemporaryDirectory(prefix="hub-platform-") as scratch:
        outputs_path = Path(scratch) / "outputs.npz"
        call_worker("run_model", {"ref": backend.run, "model_path": str(model), "samples_path": str(samples_path),
                                  "outputs_path": str(outputs_path), "threads": threads}, timeout=timeout,
                    python=python_for(catalog, backend.environment))
        return load_outputs(outputs_path)


def _first_mismatch(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
                    exact: bool) -> tuple[str | None, float]:
    first, max_abs = None, 0.0
    if len(reference) != len(candidate):
        return f"{len(candidate)} output sets on the platform for {len(reference)} samples", max_abs
    for sample, (ref_outputs, cand_outputs) in enumerate(zip(reference, candidate, strict=True)):
        if len(ref_outputs) != len(cand_outputs):
            return f"sample {sample}: {len(cand_outputs)} outputs on the platform, {len(ref_outputs)} locally", max_abs
        for output, (ref, cand) in enumerate(zip(ref_outputs, cand_outputs, strict=True)):
            difference = np.abs(ref.astype(np.float64) - cand.astype(np.float64).reshape(ref.shape))
            max_abs = max(max_abs, float(difference.max()) if difference.size else 0.0)
            equal = np.array_equal(ref, cand.reshape(ref.shape)) if exact else np.allclose(
                cand.reshape(ref.shape), ref, rtol=FLOAT_RTOL, atol=FLOAT_ATOL)
            if not equal and first is None:
                index = int(np.argmax(difference.ravel()))
                first = (f"sample {sample}, output {output}, flat index {index}: "
                         f"{ref.ravel()[index]!r} locally vs {cand.ravel()[index]!r} on the platform")
    return first, max_abs


def check_on_platform(catalog: Catalog, platform: str, model: Path, state: ModelState, reference_backend: Backend,
                      samples_path: Path, sample_count: int, threads: int = 2, timeout: float = 3600
                      ) -> PlatformCheck:
    """Run `model` locally and on `platform` with the same samples and compare the outputs."""
    backend = platform_backend(catalog, platform, state.format)
    runtime = prepare(backend)
    reference = _run(catalog, reference_backend, model, samples_path, threads, timeout)
    started = time.perf_counter()
    candidate = _run(catalog, backend, model, samples_path, threads, timeout)
    per_inference = (time.perf_counter() - started) * 1000 / max(sample_count, 1)  # start-up included
    if backend.latency:
        per_inference = call_worker("latency", {"ref": backend.latency, "model_path": str(model),
                                                "samples_path": str(samples_path), "threads": threads,
                                                "repeats": LATENCY_REPEATS}, timeout=timeout,
                                     python=python_for(catalog, backend.environment))
    exact = state.precision in EXACT_PRECISIONS
    first, max_abs = _first_mismatch(reference, candidate, exact)
    return PlatformCheck(platform, backend.name, reference_backend.name, exact, first is None, max_abs, first,
                         len(reference), per_inference, runtime)
