"""Verification: running artifacts on local backends and measuring them against a float reference.

The reference is the source, run by a real backend. When no installed backend runs the source (a state dict,
say), it is the first float, uncompressed artifact of the route that a backend runs; every later step is
measured against that one, and the report says so. An artifact is never measured against itself: a route with
nothing runnable and float before its lossy steps fails, unless verification is off.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hub.cache import StepCache, code_digest, digest_path, distribution_versions, step_key
from hub.declarations import Backend
from hub.environments import python_for
from hub.errors import FidelityError, StepFailedError, UnsupportedModelError
from hub.plugins import Catalog, missing_for
from hub.states import CHANNELS_LAST_RANKS, ModelState
from hub.verify import Fidelity, Outputs, compare
from hub.worker import call_worker, load_named_outputs, save_samples

LATENCY_REPEATS = 30
METRICS_CODE = ("verify.py", "verification.py")  # what decides a fidelity figure, besides the backend
REFERENCE_PRECISIONS = ("fp32",)


def local_backends(catalog: Catalog, format_name: str, preferred: str | None = None) -> list[Backend]:
    """The one rule for choosing backends: installed local backends that run a format, the preferred one (a
    target's own) first, then by priority and name. Later ones take a model an earlier one refuses."""
    ordered = sorted(catalog.backends.values(), key=lambda b: (b.name != preferred, b.priority, b.name))
    return [b for b in ordered if b.platform is None and format_name in b.formats and not missing_for(b, catalog)]


class Workspace:
    """A run's scratch folder: numbered sub-folders, and worker calls with the run's limits."""

    def __init__(self, root: Path, catalog: Catalog, timeout: float, memory_limit_mb: float | None) -> None:
        self.root, self.catalog, self.timeout, self.memory_limit_mb = root, catalog, timeout, memory_limit_mb
        self._numbers = itertools.count(1)

    def scratch(self, label: str) -> Path:
        folder = self.root / f"{next(self._numbers):03d}-{label}"
        folder.mkdir(parents=True)
        return folder

    def call(self, kind: str, args: dict, timeout: float | None = None, cwd: Path | None = None,
             environment: str | None = None) -> Any:
        return call_worker(kind, args, timeout=timeout or self.timeout, cwd=cwd,
                           python=python_for(self.catalog, environment), memory_limit_mb=self.memory_limit_mb)


@dataclass
class Reference:
    """What artifacts are measured against: the source, or the first float artifact a backend runs."""

    path: Path
    state: ModelState
    outputs: Outputs
    digest: str
    is_source: bool


class Verifier:
    """Runs artifacts on the verification samples and measures fidelity and latency, remembered by content."""

    def __init__(self, workspace: Workspace, source_path: Path, source_state: ModelState, target_backend: str,
                 feeds: list[dict[str, np.ndarray]], threads: int, model_options: dict, cache: StepCache) -> None:
        self.workspace, self.catalog = workspace, workspace.catalog
        self.source_path, self.source_state, self.target_backend = source_path, source_state, target_backend
        self.feeds, self.threads, self.model_options, self.cache = feeds, threads, model_options, cache
        self.samples_path = workspace.root / "verification-samples.npz"
        save_samples(self.samples_path, feeds)
        self.samples_digest = digest_path(self.samples_path)
        self.source_digest = digest_path(source_path)
        self.reference: Reference | None = None
        self.source_runs: bool | None = None
        self.reference_note = ""

    def backends_for(self, format_name: str) -> list[Backend]:
        return local_backends(self.catalog, format_name, self.target_backend)

    def backend_for(self, format_name: str) -> Backend | None:
        candidates = self.backends_for(format_name)
        return candidates[0] if candidates else None

    def samples_for(self, layout: str) -> Path:
        """The verification samples in the layout an artifact expects (the source's, or channels-last)."""
        if layout == "source":
            return self.samples_path
        path = self.workspace.root / f"verification-samples-{layout}.npz"
        if not path.exists():
            save_samples(path, [{name: to_layout(value, layout) for name, value in feed.items()}
                                for feed in self.feeds])
        return path

    def run_outputs(self, artifact: Path, state: ModelState) -> Outputs | None:
        """The artifact's outputs (and their names) on the verification samples, from the first backend that can
        load it (an old ONNX opset that ONNX Runtime refuses still runs on the ONNX reference evaluator)."""
        refusals: list[UnsupportedModelError] = []
        for backend in self.backends_for(state.format):
            outputs_path = self.workspace.scratch("outputs") / "outputs.npz"
            try:
                self.workspace.call("run_model", {
                    "ref": backend.run, "model_path": str(artifact), "samples_path": str(self.samples_for(state.layout)),
                    "outputs_path": str(outputs_path), "threads": self.threads, "options": self.model_options,
                    "names_ref": backend.output_names}, environment=backend.environment)
            except UnsupportedModelError as refusal:
                refusals.append(refusal)
                continue
            outputs = load_named_outputs(outputs_path)
            shapes = {o.shape for o in self.reference.outputs.samples[0]} if self.reference else set()
            return Outputs([[from_layout(o, state.layout, shapes) for o in sample] for sample in outputs.samples],
                           outputs.names)
        if refusals and artifact == self.source_path:
            raise refusals[0]
        if refusals:  # a model the hub itself produced is never the user's bad input: the step failed
            raise StepFailedError(f"no backend can load what the step produced: {refusals[0].message}",
                                  detail=refusals[0].detail)
        return None

    def source_reference(self) -> Reference | None:
        """The source as the reference, when a backend runs it (decided once)."""
        if self.source_runs is None:
            outputs = self.run_outputs(self.source_path, self.source_state)
            self.source_runs = outputs is not None
            if outputs is not None:
                self.reference = Reference(self.source_path, self.source_state, outputs, self.source_digest, True)
        return self.reference if self.source_runs else None

    def _adopt(self, artifact: Path, state: ModelState, outputs: Outputs, step: str) -> None:
        if state.precision not in REFERENCE_PRECISIONS or state.traits:
            raise FidelityError(
                f"no float reference can be run: no installed backend runs {self.source_state.format}, and the "
                f"first artifact one runs ({step}: {state}) is already compressed, so comparing with it would "
                "prove nothing; install the source format's backend, choose a route through a float format, or "
                "pass --no-verify")
        self.reference = Reference(artifact, state, outputs, digest_path(artifact), False)
        self.reference_note = (f"no installed backend runs {self.source_state.format}: the reference is the "
                               f"output of {step} ({state}), which could not itself be checked against the source")

    def _fidelity_key(self, artifact: Path, state: ModelState, reference_digest: str) -> str | None:
        # the metrics' own code is part of the key: a hub that measures differently must not recall old figures
        return self._measurement_key("fidelity", artifact, state, reference=reference_digest,
                                     metrics=[digest_path(Path(__file__).with_name(name)) for name in METRICS_CODE])

    def _measurement_key(self, kind: str, artifact: Path, state: ModelState, **extra: Any) -> str | None:
        backend = self.backend_for(state.format)
        if backend is None:
            return None
        return step_key(kind=kind, artifact=digest_path(artifact), source=self.source_digest,
                        samples=self.samples_digest, backend=backend.name, threads=self.threads,
                        layout=state.layout, code=code_digest(backend.run),
                        versions=distribution_versions(backend.requires), **extra)

    def measure_fidelity(self, artifact: Path, state: ModelState, step: str = "") -> Fidelity | None:
        """Fidelity of an artifact against the reference; None when no backend runs it, or when it becomes the
        reference itself (the source cannot run and this is the first float artifact)."""
        reference = self.source_reference() or self.reference
        key = self._fidelity_key(artifact, state, reference.digest) if reference else None
        remembered = self.cache.recall(key) if key else None
        if remembered is not None:
            return Fidelity.from_json(remembered)
        outputs = self.run_outputs(artifact, state)
        if outputs is None:
            return None
        if reference is None:
            self._adopt(artifact, state, outputs, step or str(artifact.name))
            return None
        try:
            fidelity = compare(reference.outputs, outputs)
        except ValueError as error:
            raise FidelityError(f"outputs do not line up with the reference's: {error}") from error
        self.cache.remember(key, fidelity.to_json())
        return fidelity

    def latency_ms(self, artifact: Path, state: ModelState) -> float | None:
        backend = self.backend_for(state.format)
        if backend is None or backend.latency is None:
            return None
        key = self._measurement_key("latency", artifact, state, repeats=LATENCY_REPEATS)
        remembered = self.cache.recall(key)
        if remembered is not None:
            return remembered
        try:
            measured = self.workspace.call("latency", {
                "ref": backend.latency, "model_path": str(artifact),
                "samples_path": str(self.samples_for(state.layout)), "threads": self.threads,
                "repeats": LATENCY_REPEATS, "options": self.model_options}, environment=backend.environment)
        except UnsupportedModelError:  # e.g. an old-opset source that only the reference evaluator runs
            return None
        return self.cache.remember(key, measured)


def to_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """A source-layout (channels-first) array in the artifact's layout: "nhwc" moves channels last."""
    if layout != "nhwc" or array.ndim not in CHANNELS_LAST_RANKS:
        return array
    return np.ascontiguousarray(array.transpose(0, *range(2, array.ndim), 1))


def from_layout(array: np.ndarray, layout: str, source_shapes: set[tuple[int, ...]] | frozenset = frozenset()
                ) -> np.ndarray:
    """An artifact's output in the source's layout: "nhwc" moves channels back to axis 1. An output that already
    has a shape of the source's outputs, which moving would lose, stays: converters leave some outputs in the
    source's layout (onnx2tf does with 3-D outputs that a TFLite-born ONNX graph computes channels-last)."""
    if layout != "nhwc" or array.ndim not in CHANNELS_LAST_RANKS:
        return array
    moved = np.ascontiguousarray(array.transpose(0, array.ndim - 1, *range(1, array.ndim - 1)))
    if array.shape in source_shapes and moved.shape not in source_shapes:
        return array
    return moved
