"""Runs routes: each step executed (hub.execution) and verified (hub.verification), and on any failure the next
route is tried (first_working, which starts no process itself)."""
from __future__ import annotations

import os
import shutil
import time
import uuid
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from hub.cache import StepCache, copy_artifact
from hub.declarations import Target, Tolerance
from hub.errors import FidelityError, HubError, StepDeclinedError, StepFailedError, UnsupportedModelError, UsageError
from hub.execution import StepExecutor
from hub.inputs import SampleSet
from hub.planner import PlannedStep, Route
from hub.plugins import Catalog
from hub.report import FinalRecord, RouteFailure, StepRecord, artifact_bytes
from hub.sources import Source
from hub.states import ModelState, TensorSpec
from hub.verification import Verifier, Workspace


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
    """Executes routes for one source: steps through a StepExecutor, measurements through a Verifier."""

    def __init__(self, catalog: Catalog, source: Source, target: Target, inputs: tuple[TensorSpec, ...],
                 samples: SampleSet, settings: RunSettings, cache: StepCache, workspace: Path,
                 progress: Progress | None = None) -> None:
        self.source, self.target, self.settings = source, target, settings
        self.progress = progress or SilentProgress()
        self.workspace = Workspace(workspace, catalog, settings.step_timeout, settings.memory_limit_mb)
        # Verification judges samples the quantizers did not calibrate on, where there are enough: on its own
        # calibration crops a full-integer EfficientNet agreed with fp32 on top-1 for 0.94, on other photos 0.69.
        calibration, verification = samples.held_out(settings.verify_samples)
        self.verification_held_out = calibration is not verification
        calibration_path = workspace / "calibration.npz"
        np.savez(calibration_path, **calibration.arrays)
        self.verifier = Verifier(self.workspace, source.path, source.state, target.backend,
                                 verification.feeds(settings.verify_samples), settings.threads,
                                 settings.step_options.get("*", {}), cache)
        self.executor = StepExecutor(self.workspace, catalog, target, source.path, inputs, calibration_path,
                                     settings.step_options, settings.trait_options, cache)
        self.final_state: ModelState = source.state

    @property
    def reference_note(self) -> str:
        return self.verifier.reference_note

    def _relaxed(self, planned: PlannedStep, tolerance: Tolerance) -> Tolerance:
        """The tolerance from this step on: a requested lossy compression lowers the cosine bound it declares."""
        if self.settings.tolerance_overridden or planned.step.min_cosine is None:
            return tolerance
        return Tolerance(min_cosine=min(tolerance.min_cosine, planned.step.min_cosine), min_top1=None, max_abs=None)

    def run_step(self, planned: PlannedStep, artifact: Path, tolerance: Tolerance | None = None,
                 later_precisions: tuple[str, ...] = ()) -> tuple[StepRecord, Path]:
        """Run one step (or reuse its cached output) and verify it; when its output drifts beyond the tolerance,
        climb the step's ladder (see Step.ladder) until a rung passes. later_precisions: the precisions of the
        states the route goes on to after this step, for a step with wants_later_precisions."""
        tolerance = tolerance or self.settings.tolerance
        self.progress.step_started(planned)
        record, output = self._attempt(planned, artifact, later_precisions, None)
        violations = record.fidelity.violations(tolerance) if record.fidelity else []
        if not violations:
            return record, output
        climbed = [_rung_record(None, record, violations)]
        plain_output, plain_bytes = output, record.bytes
        for rung in planned.step.ladder:
            try:
                record, output = self._attempt(planned, artifact, later_precisions, rung)
            except HubError as error:  # a rung the model cannot take (a calibrator that crashes on it)
                climbed.append({"options": dict(rung), "error": error.message})
                continue
            rung_violations = record.fidelity.violations(tolerance) if record.fidelity else []
            rung_violations += _oversized(planned, artifact, record, plain_bytes)
            climbed.append(_rung_record(rung, record, rung_violations))
            if not rung_violations:
                notes = {**record.notes, "ladder": climbed, **self._escalation_latency(planned, plain_output, output)}
                return replace(record, notes=notes), output
        rungs = len(planned.step.ladder)
        tried = (" (and on the 1 rung of its ladder)" if rungs == 1 else
                 f" (and on all {rungs} rungs of its ladder)" if rungs else "")
        raise FidelityError(f"output drifted beyond the tolerance of {self.target.name}: "
                            + "; ".join(violations) + tried, detail=json.dumps(climbed, indent=1))

    def _escalation_latency(self, planned: PlannedStep, plain: Path, chosen: Path) -> dict[str, Any]:
        """What the rung that passed costs in speed: its latency and the plain result's, on the target's backend
        (a rung that keeps layers in float or widens activations can run several times slower)."""
        if not self.settings.verify:
            return {}
        plain_ms = self.verifier.latency_ms(plain, planned.result)
        chosen_ms = self.verifier.latency_ms(chosen, planned.result)
        if not plain_ms or not chosen_ms:
            return {}
        # four significant digits: a small model's 0.013 ms rounded to 3 decimals misstates the ratio by 8%
        return {"latency_ms": {"plain": float(f"{plain_ms:.4g}"), "chosen_rung": float(f"{chosen_ms:.4g}"),
                               "slowdown": round(chosen_ms / plain_ms, 2)}}

    def _attempt(self, planned: PlannedStep, artifact: Path, later_precisions: tuple[str, ...],
                 rung: Mapping[str, Any] | None) -> tuple[StepRecord, Path]:
        started = time.perf_counter()
        output = self.executor.run(planned, artifact, later_precisions, rung)
        ran = time.perf_counter()
        fidelity = self.verifier.measure_fidelity(output.path, planned.result, planned.name) \
            if self.settings.verify else None
        notes = {**output.notes, "rung": dict(rung)} if rung else output.notes
        record = StepRecord(planned.name, planned.plugin, planned.kind, str(planned.result), ran - started,
                            artifact_bytes(output.path), fidelity, output.cached, notes,
                            verify_seconds=time.perf_counter() - ran)
        self.progress.step_finished(record)
        return record, output.path

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
        return first_working(routes, attempts, self.run_route, self.progress, self.target.name)

    def final_record(self, artifact: Path, output_path: Path, route: Route, records: list[StepRecord],
                     measure_latency: bool = True) -> FinalRecord:
        """The delivered model's record. A route of no steps delivers the source itself: it has no fidelity to
        measure (it would be compared with itself)."""
        state = route.steps[-1].result if route.steps else self.source.state
        self.final_state = state
        fidelity = records[-1].fidelity if records else None
        latency = source_latency = None
        if measure_latency:
            self.progress.measuring("latency")
            latency = self.verifier.latency_ms(artifact, state)
            source_latency = self.verifier.latency_ms(self.source.path, self.source.state)
        backend = self.verifier.backend_for(state.format)
        return FinalRecord(str(output_path), state.format, str(state), artifact_bytes(artifact),
                           backend.name if backend else "-", latency, source_latency, fidelity)


LADDER_SIZE_SLACK = 2.0
LADDER_PLAIN_SLACK = 1.25


def _oversized(planned: PlannedStep, artifact: Path, record: StepRecord, plain_bytes: int) -> list[str]:
    """A rung that keeps so much in higher precision that the file loses the step's point (an "int8" model as
    large as the float one) does not pass: it may grow to LADDER_SIZE_SLACK times the size the step declares,
    or to LADDER_PLAIN_SLACK times the plain result's size where that is larger (a small model's fixed overhead,
    scales and quantize/dequantize nodes, which the declared ratio does not foresee: MediaPipe's 450 KB selfie
    segmenter came out at 0.61x as plain int8, and its 16-bit-activation rung, no larger, was refused)."""
    source_bytes = max(artifact_bytes(artifact), 1)
    limit = max(LADDER_SIZE_SLACK * planned.step.size_ratio, LADDER_PLAIN_SLACK * plain_bytes / source_bytes)
    ratio = record.bytes / source_bytes
    if planned.step.size_ratio >= 1.0 or ratio <= limit:
        return []
    return [f"size {ratio:.2f}x its input, over the {limit:.2f}x a rung of {planned.name} may reach"]


def _rung_record(rung: Mapping[str, Any] | None, record: StepRecord, violations: list[str]) -> dict[str, Any]:
    """One rung of a climbed ladder, for the report: its options, its fidelity and what it missed."""
    fidelity = record.fidelity.to_json() if record.fidelity else None
    summary = {k: fidelity[k] for k in ("cosine", "max_abs", "top1_agreement", "worst_slice_cosine")} \
        if fidelity else None
    return {"options": dict(rung or {}), "fidelity": summary, "bytes": record.bytes, "violations": violations}


RunRoute = Callable[[Route], tuple[Path, list[StepRecord]]]


def _quantizes(route: Route, step: str) -> bool:
    """Whether the route's step of that name changes the precision (a quantizer, or a converter to int8)."""
    return any(p.name == step and p.result.precision != p.source.precision for p in route.steps)


def first_working(routes: list[Route], attempts: int, run_route: RunRoute, progress: Progress,
                  target_name: str) -> tuple[Route, Path, list[StepRecord], list[RouteFailure]]:
    """Try routes in cost order, at most `attempts` of them (a route a step declined at once does not count),
    skipping any route that repeats a step which already failed from the same state, and trying routes without
    a quantizing step whose output drifted before those with it (the same quantizer after a clean-up of the
    graph drifts again; another quantizer may not). A float converter that drifted is not deferred: a clean-up
    changes what it is given (onnx2tf mistranslates an opset-6 Pad that onnxslim rewrites). The first route that runs and verifies wins. When all fail, raises one
    error that lists each route's failure, of the class of a failure the user must fix (a flag, an untrusted
    file) if any."""
    failures: list[RouteFailure] = []
    errors: list[HubError] = []
    failed: set[tuple[str, str]] = set()
    drifted: set[str] = set()
    pending = list(routes)
    while pending and sum(not isinstance(e, StepDeclinedError) for e in errors) < attempts:
        route = next((r for r in pending if not drifted & set(r.names)), pending[0])
        pending.remove(route)
        if any((p.name, str(p.source)) in failed for p in route.steps):
            continue
        progress.route_started(route, len(failures) + 1)
        try:
            artifact, records = run_route(route)
            return route, artifact, records, failures
        except HubError as error:
            step = getattr(error, "failed_step", "?")
            failed.update((p.name, str(p.source)) for p in route.steps if p.name == step)
            if isinstance(error, FidelityError) and _quantizes(route, step):
                drifted.add(step)
            failure = RouteFailure(route.names, step, error.message, error.detail)
            failures.append(failure)
            errors.append(error)
            progress.route_failed(failure)
    if not failures:
        raise StepFailedError(f"no route to {target_name} could be tried")
    user_errors = [e for e in errors if isinstance(e, (UsageError, UnsupportedModelError))]
    error_class = type(user_errors[0]) if user_errors else StepFailedError
    header = f"all {len(failures)} route(s) tried to {target_name} failed:"
    if user_errors:
        header = f"{one_line(user_errors[0].message)} ({header[:-1]})"
    lines = [header] + [f"  {' -> '.join(f.route) or '(none)'}: {f.step}: {one_line(f.reason)}" for f in failures]
    raise error_class("\n".join(lines), detail="\n\n".join(f"{f.reason}\n{f.detail or ''}" for f in failures))


REASON_CHARS = 300


def one_line(text: str) -> str:
    """A library's message as one line for the summary: its first line, shortened (the rest is in the detail
    that --debug and the report show)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= REASON_CHARS else first[:REASON_CHARS - 1] + "…"


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
