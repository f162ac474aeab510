"""Runs a planned route step by step: each step in a worker on a copy of its input, cached by content,
verified against the source, and on any failure the next route is tried."""
from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hub.cache import StepCache, code_digest, copy_artifact, digest_path, distribution_versions, step_key
from hub.declarations import LATER_PRECISIONS, Backend, Step, Target, Tolerance
from hub.errors import FidelityError, HubError, StepFailedError, UnsupportedModelError, UsageError
from hub.inputs import SampleSet
from hub.planner import PlannedStep, Route
from hub.environments import python_for
from hub.plugins import Catalog, missing_for
from hub.report import FinalRecord, RouteFailure, StepRecord, artifact_bytes
from hub.sources import Source
from hub.verify import Fidelity, compare
from hub.worker import call_worker, load_outputs, save_samples
from hub.states import CHANNELS_LAST_RANKS, ModelState, TensorSpec

LATENCY_REPEATS = 30


class Progress(Protocol):
    """What the runner tells its caller as it goes (the CLI draws it; the API ignores it by default)."""

    def route_started(self, route: Route, attempt: int) -> None: ...
    def step_started(self, planned: PlannedStep) -> None: ...
    def step_finished(self, record: StepRecord) -> None: ...
    def route_failed(self, failure: RouteFailure) -> None: ...
    def measuring(self, what: str) -> None: ...


class SilentProgress:
    def route_started(self, route: Route, attempt: int) -> None: ...
    def step_started(self, planned: PlannedStep) -> None: ...
    def step_finished(self, record: StepRecord) -> None: ...
    def route_failed(self, failure: RouteFailure) -> None: ...
    def measuring(self, what: str) -> None: ...


@dataclass
class RunSettings:
    tolerance: Tolerance
    verify: bool = True
    step_timeout: float = 1800.0
    threads: int = 2
    verify_samples: int = 32
    step_options: dict[str, Any] = field(default_factory=dict)
    memory_limit_mb: float | None = None
    trait_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # options for a step adding a trait
    tolerance_overridden: bool = False  # the user set --min-cosine/--min-top1/--max-abs: it applies everywhere


class RouteRunner:
    """Executes routes for one source; holds the workspace, the samples and the source's reference outputs."""

    def __init__(self, catalog: Catalog, source: Source, target: Target, inputs: tuple[TensorSpec, ...],
                 samples: SampleSet, settings: RunSettings, cache: StepCache, workspace: Path,
                 progress: Progress | None = None) -> None:
        self.catalog, self.source, self.target, self.inputs = catalog, source, target, inputs
        self.settings, self.cache, self.workspace = settings, cache, workspace
        self.progress = progress or SilentProgress()
        self.calibration_path = workspace / "calibration.npz"
        np.savez(self.calibration_path, **samples.arrays)
        self.calibration_digest = digest_path(self.calibration_path)
        self.verification_feeds = samples.feeds(settings.verify_samples)
        self.samples_path = workspace / "verification-samples.npz"
        save_samples(self.samples_path, self.verification_feeds)
        self.samples_digest = digest_path(self.samples_path)
        self.source_digest = digest_path(source.path)
        self.reference: list[list[np.ndarray]] | None = None
        self.reference_note = ""
        self.final_state: ModelState = source.state
        self._job = 0

    def _call(self, kind: str, args: dict, timeout: float | None = None, cwd: Path | None = None,
              environment: str | None = None) -> Any:
        return call_worker(kind, args, timeout=timeout or self.settings.step_timeout, cwd=cwd,
                           python=python_for(self.catalog, environment), memory_limit_mb=self.settings.memory_limit_mb)

    # ---- backends and verification -----------------------------------------------------------------------

    def backends_for(self, format_name: str) -> list[Backend]:
        """Installed local backends running a format: the target's first, then by priority and name."""
        ordered = sorted(self.catalog.backends.values(),
                         key=lambda b: (b.name != self.target.backend, b.priority, b.name))
        return [b for b in ordered if b.platform is None and format_name in b.formats
                and not missing_for(b, self.catalog)]

    def backend_for(self, format_name: str) -> Backend | None:
        candidates = self.backends_for(format_name)
        return candidates[0] if candidates else None

    def samples_for(self, layout: str) -> Path:
        """The verification samples in the layout an artifact expects (the source's, or channels-last)."""
        if layout == "source":
            return self.samples_path
        path = self.workspace / f"verification-samples-{layout}.npz"
        if not path.exists():
            save_samples(path, [{name: to_layout(value, layout) for name, value in feed.items()}
                                for feed in self.verification_feeds])
        return path

    def run_outputs(self, artifact: Path, state: ModelState) -> list[list[np.ndarray]] | None:
        """The artifact's outputs on the verification samples, from the first backend that can load it (an old
        ONNX opset that ONNX Runtime refuses still runs on the ONNX reference evaluator)."""
        refusals: list[UnsupportedModelError] = []
        for backend in self.backends_for(state.format):
            outputs_path = self._scratch("outputs") / "outputs.npz"
            try:
                self._call("run_model", {"ref": backend.run, "model_path": str(artifact),
                                         "samples_path": str(self.samples_for(state.layout)),
                                         "outputs_path": str(outputs_path), "threads": self.settings.threads,
                                         "options": self.settings.step_options.get("*", {})},
                           environment=backend.environment)
            except UnsupportedModelError as refusal:
                refusals.append(refusal)
                continue
            return [[from_layout(o, state.layout) for o in sample] for sample in load_outputs(outputs_path)]
        if refusals:
            raise refusals[0]
        return None

    def _reference_outputs(self) -> list[list[np.ndarray]] | None:
        if self.reference is None and not self.reference_note:
            self.reference = self.run_outputs(self.source.path, self.source.state)
            if self.reference is None:
                self.reference_note = (f"no installed backend runs {self.source.state.format}: steps are "
                                       "compared with the first artifact that can be run")
        return self.reference

    def _measurement_key(self, kind: str, artifact: Path, state: ModelState, **extra: Any) -> str | None:
        backend = self.backend_for(state.format)
        if backend is None:
            return None
        return step_key(kind=kind, artifact=digest_path(artifact), source=self.source_digest,
                        samples=self.samples_digest, backend=backend.name, threads=self.settings.threads,
                        layout=state.layout, code=code_digest(backend.run),
                        versions=distribution_versions(backend.requires), **extra)

    def measure_fidelity(self, artifact: Path, state: ModelState) -> Fidelity | None:
        """Fidelity of an artifact against the source, remembered by content so a re-run need not rerun both."""
        key = self._measurement_key("fidelity", artifact, state)
        remembered = self.cache.recall(key) if key else None
        if remembered is not None:
            return Fidelity.from_json(remembered)
        reference = self._reference_outputs()
        outputs = self.run_outputs(artifact, state)
        if outputs is None:
            return None
        if reference is None:
            self.reference = reference = outputs
        try:
            fidelity = compare(reference, outputs)
        except ValueError as error:
            raise FidelityError(f"outputs do not line up with the source's: {error}") from error
        self.cache.remember(key, asdict(fidelity))
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
            measured = self._call("latency", {
                "ref": backend.latency, "model_path": str(artifact),
                "samples_path": str(self.samples_for(state.layout)), "threads": self.settings.threads,
                "repeats": LATENCY_REPEATS, "options": self.settings.step_options.get("*", {})},
                environment=backend.environment)
        except UnsupportedModelError:  # e.g. an old-opset source that only the reference evaluator runs
            return None
        return self.cache.remember(key, measured)

    # ---- steps and routes ---------------------------------------------------------------------------------

    def _scratch(self, label: str) -> Path:
        self._job += 1
        folder = self.workspace / f"{self._job:03d}-{label}"
        folder.mkdir(parents=True)
        return folder

    def _options(self, planned: PlannedStep, later_precisions: tuple[str, ...] = ()) -> dict[str, Any]:
        options = {**planned.step.defaults(), **self.target.options}
        for trait in set(planned.result.traits) - set(planned.source.traits):
            options.update(self.settings.trait_options.get(trait, {}))
        options.update(self.settings.step_options.get(planned.name, {}))
        options.update(self.settings.step_options.get("*", {}))
        options["source_path"] = str(self.source.path)  # a teacher for distillation, a reference for others
        if planned.step.wants_later_precisions:  # only there: other steps' cache keys stay route-independent
            options[LATER_PRECISIONS] = sorted(set(later_precisions))
        return options

    def _key(self, planned: PlannedStep, artifact: Path, options: dict) -> str:
        record = next((p for p in self.catalog.plugins if p.name == planned.plugin), None)
        keyed = {k: v for k, v in options.items() if k != "source_path"}
        files = {k: digest_path(Path(v)) for k, v in keyed.items() if k in planned.step.path_options() and v}
        return step_key(
            input=digest_path(artifact), step=planned.name, produces=dict(planned.step.produces),
            options=keyed, files=files, inputs=[s.to_json() for s in self.inputs],
            teacher=self.source_digest,
            calibration=self.calibration_digest if planned.step.needs_calibration else None,
            plugin=record.origin if record else None, code=code_digest(planned.step.run),
            versions=distribution_versions(planned.step.requires),
        )

    def _relaxed(self, planned: PlannedStep, tolerance: Tolerance) -> Tolerance:
        """The tolerance from this step on: a requested lossy compression lowers the cosine bound it declares."""
        if self.settings.tolerance_overridden or planned.step.min_cosine is None:
            return tolerance
        return Tolerance(min_cosine=min(tolerance.min_cosine, planned.step.min_cosine), min_top1=None, max_abs=None)

    def run_step(self, planned: PlannedStep, artifact: Path, tolerance: Tolerance | None = None,
                 later_precisions: tuple[str, ...] = ()) -> tuple[StepRecord, Path]:
        """Run one step (or reuse its cached output) and verify it. later_precisions: the precisions of the
        states the route goes on to after this step, for a step with wants_later_precisions."""
        self.progress.step_started(planned)
        options = self._options(planned, later_precisions)
        key = self._key(planned, artifact, options)
        cached = self.cache.lookup(key)
        started = time.perf_counter()
        if cached:
            output, meta = cached
            notes = meta.get("notes", {})
        else:
            output, notes = self._execute(planned, artifact, options)
            output = self.cache.store(key, output, {"notes": notes, "step": planned.name})
        ran = time.perf_counter()
        fidelity = self.measure_fidelity(output, planned.result) if self.settings.verify else None
        record = StepRecord(planned.name, planned.plugin, planned.kind, str(planned.result), ran - started,
                            artifact_bytes(output), fidelity, bool(cached), notes,
                            verify_seconds=time.perf_counter() - ran)
        self.progress.step_finished(record)
        if fidelity is not None:
            violations = fidelity.violations(tolerance or self.settings.tolerance)
            if violations:
                raise FidelityError(f"output drifted beyond the tolerance of {self.target.name}: "
                                    + "; ".join(violations))
        return record, output

    def _execute(self, planned: PlannedStep, artifact: Path, options: dict) -> tuple[Path, dict]:
        folder = self._scratch(planned.name)
        (folder / "input").mkdir()
        private_input = folder / "input" / artifact.name
        copy_artifact(artifact, private_input)  # steps get a copy: some libraries rewrite their input
        workdir = folder / "work"
        workdir.mkdir()
        value = self._call("step", {"ref": planned.step.run, "context": {
            "input_path": str(private_input), "workdir": str(workdir), "options": options,
            "inputs": [s.to_json() for s in self.inputs],
            "calibration": str(self.calibration_path) if planned.step.needs_calibration else None,
        }}, timeout=worker_timeout(planned.step, options, self.settings.step_timeout), cwd=workdir,
            environment=planned.step.environment)
        output = Path(value["path"]).resolve()
        if not output.exists() or workdir.resolve() not in output.parents:
            raise StepFailedError(f"step {planned.name} returned {output}, which is not a file it wrote in its "
                                  "work folder (a bug in its plugin)")
        return output, value.get("notes", {})

    def run_route(self, route: Route) -> tuple[Path, list[StepRecord]]:
        artifact, records = self.source.path, []
        tolerance = self.settings.tolerance
        for index, planned in enumerate(route.steps):
            tolerance = self._relaxed(planned, tolerance)
            later_precisions = tuple(later.result.precision for later in route.steps[index + 1:])
            try:
                record, artifact = self.run_step(planned, artifact, tolerance, later_precisions)
            except HubError as error:
                error.failed_step = planned.name  # type: ignore[attr-defined]
                raise
            records.append(record)
        return artifact, records

    def run_first_working(self, routes: list[Route], attempts: int
                          ) -> tuple[Route, Path, list[StepRecord], list[RouteFailure]]:
        """Try routes in cost order, at most `attempts` of them, skipping any route that repeats a step which
        already failed from the same state; the first route that runs and verifies wins."""
        failures: list[RouteFailure] = []
        errors: list[HubError] = []
        failed: set[tuple[str, str]] = set()
        for route in routes:
            if len(failures) >= attempts:
                break
            if any((p.name, str(p.source)) in failed for p in route.steps):
                continue
            self.progress.route_started(route, len(failures) + 1)
            try:
                artifact, records = self.run_route(route)
                return route, artifact, records, failures
            except HubError as error:
                step = getattr(error, "failed_step", "?")
                failed.update((p.name, str(p.source)) for p in route.steps if p.name == step)
                failure = RouteFailure(route.names, step, error.message, error.detail)
                failures.append(failure)
                errors.append(error)
                self.progress.route_failed(failure)
        if not failures:
            raise StepFailedError(f"no route to {self.target.name} could be tried")
        lines = [f"all {len(failures)} route(s) tried to {self.target.name} failed:"]
        lines += [f"  {' -> '.join(f.route) or '(none)'}: {f.step}: {f.reason}" for f in failures]
        # when a route failed on something the user must fix (a flag, an untrusted file), say that first
        user_errors = [e for e in errors if isinstance(e, (UsageError, UnsupportedModelError))]
        error_class = type(user_errors[0]) if user_errors else StepFailedError
        message = user_errors[0].message + "\n" + "\n".join(lines) if user_errors else "\n".join(lines)
        raise error_class(message, detail="\n\n".join(f.detail or "" for f in failures))

    def final_record(self, artifact: Path, output_path: Path, route: Route, records: list[StepRecord],
                     measure_latency: bool = True) -> FinalRecord:
        state = route.steps[-1].result if route.steps else self.source.state
        self.final_state = state
        fidelity = records[-1].fidelity if records else (
            self.measure_fidelity(artifact, state) if self.settings.verify else None)
        latency = source_latency = None
        if measure_latency:
            self.progress.measuring("latency")
            latency = self.latency_ms(artifact, state)
            source_latency = self.latency_ms(self.source.path, self.source.state)
        backend = self.backend_for(state.format)
        return FinalRecord(str(output_path), state.format, str(state), artifact_bytes(artifact),
                           backend.name if backend else "-", latency, source_latency, fidelity)


def worker_timeout(step: Step, options: dict, default: float) -> float:
    """The step's declared timeout (or `default`), raised for a step that bounds its own wall time (its
    time_budget_option) to that bound plus a margin for its loading and saving: a user who gives a training step
    an hour must not see it killed at the declared half hour."""
    declared = step.timeout or default
    budget = options.get(step.time_budget_option) if step.time_budget_option else None
    if budget is None:
        return declared
    return max(declared, float(budget) * SELF_BOUND_MARGIN + 60.0)


SELF_BOUND_MARGIN = 1.25


def to_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """A source-layout (channels-first) array in the artifact's layout: "nhwc" moves channels last."""
    if layout != "nhwc" or array.ndim not in CHANNELS_LAST_RANKS:
        return array
    return np.ascontiguousarray(array.transpose(0, *range(2, array.ndim), 1))


def from_layout(array: np.ndarray, layout: str) -> np.ndarray:
    if layout != "nhwc" or array.ndim not in CHANNELS_LAST_RANKS:
        return array
    return np.ascontiguousarray(array.transpose(0, array.ndim - 1, *range(1, array.ndim - 1)))


def write_atomically(artifact: Path, destination: Path) -> None:
    """Copy into the destination's folder under a temporary name, then rename into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        copy_artifact(artifact, partial)
        if destination.is_dir():
            shutil.rmtree(destination)
        os.replace(partial, destination)
    finally:
        if partial.exists():
            shutil.rmtree(partial) if partial.is_dir() else partial.unlink()


def write_text_atomically(text: str, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.write_text(text)
    os.replace(partial, destination)
