"""The Python API that deployment scripts import: convert(), plan(), inspect()."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from hub.cache import StepCache, digest_path, distribution_versions, step_key
from hub.contract import ContractError, check_declarations
from hub.declarations import Step, Target, Tolerance
from hub.distributions import output_distributions
from hub.environments import python_for
from hub.html_report import render_html
from hub.errors import (FidelityError, HubError, MissingDependencyError, NoRouteError, PluginError, StepFailedError,
                        UnknownTargetError, UnsupportedModelError, UsageError)
from hub.platforms import PlatformCheck, check_on_platform
from hub.inputs import (SampleSet, load_samples, merge_specs, parse_input_flag, random_samples,
                        with_sample_shapes)
from hub.planner import Route, available_steps, enumerate_routes, explain_no_route, plan_routes, weights_for
from hub.plugins import Catalog, install_hint, load_catalog, missing_for
from hub.report import FinalRecord, Report, RouteFailure, StepRecord
from hub.requests import CompressionRequest, ConstrainedTarget, apply_requests
from hub.runner import Progress, RouteRunner, RunSettings, SilentProgress, write_atomically, write_text_atomically
from hub.sources import Source, detect_source, save_in_memory_model
from hub.verification import local_backends
from hub.verify import pair_outputs
from hub.states import ModelInfo, Requirement, TensorSpec
from hub.worker import call_worker, save_samples

DESCRIBE_TIMEOUT = float(os.environ.get("HUB_DESCRIBE_TIMEOUT", 600))


@dataclass(frozen=True)
class PlanResult:
    source: Source
    target: Target
    routes: list[Route]
    prefer: str

    def to_json(self) -> dict:
        return {
            "source": {"path": str(self.source.path), "state": str(self.source.state), "bytes": self.source.bytes},
            "target": self.target.name,
            "prefer": self.prefer,
            "cost_weights": weights_for(self.prefer).to_json(),
            "routes": [r.to_json() for r in self.routes],
        }


@dataclass(frozen=True)
class ConversionResult:
    """path: the delivered model (None on a dry run). report: everything measured (see Report.to_json)."""

    path: Path | None
    report: Report


def find_target(catalog: Catalog, name: str, keep_layout: bool = False) -> Target:
    """The named target; with keep_layout, only states whose inputs and outputs keep the source's layout."""
    if name not in catalog.targets:
        broken = catalog.broken_owner(name)
        if broken:
            raise PluginError(f"target {name!r} comes from plugin {broken.name!r}, which is broken: {broken.error}; "
                              "fix or uninstall it (`hub plugins` lists it)")
        raise UnknownTargetError(f"unknown target {name!r}; known targets: {', '.join(sorted(catalog.targets))} "
                                 "(`hub targets` lists them)")
    target = catalog.targets[name]
    if keep_layout:
        target = replace(target, requires=Requirement({**target.requires.allowed, "layout": frozenset({"source"})}))
    return target


def constrained_target(catalog: Catalog, name: str, keep_layout: bool, compress: Iterable[str]) -> ConstrainedTarget:
    """The target narrowed by --keep-layout and the compression requests (`prune:0.5`, `int4-weights`, ...)."""
    requests = [CompressionRequest.parse(text, catalog) for text in compress]
    return apply_requests(find_target(catalog, name, keep_layout), requests, catalog)


def no_route_error(catalog: Catalog, source: Source, target: Target) -> PluginError | NoRouteError:
    """Why there is no route: a PluginError naming the broken plugins whose steps a route would need, else a
    NoRouteError with what is reachable and what would connect it."""
    broken_steps = [step for record in catalog.broken for step in record.steps if _sound(step)]
    if broken_steps:
        for route in enumerate_routes(catalog, available_steps(catalog) + broken_steps, source.state, target,
                                      source.bytes / 1e6, weights_for("balanced")):
            needed = {record.name: record.error for record in map(catalog.broken_owner, route.names) if record}
            if needed:
                return PluginError(f"the route to {target.name} needs broken plugin(s): " + "; ".join(
                    f"{name} ({error})" for name, error in needed.items()) + ": fix or uninstall them")
            break
    message = explain_no_route(catalog, source.state, target, source.bytes)
    unknown = [record for record in catalog.broken if not record.steps]
    if unknown:
        message += "; plugin(s) that failed to load, which might have offered a step: " + ", ".join(
            f"{record.name} ({record.error})" for record in unknown)
    return NoRouteError(message)


def _sound(step: Step) -> bool:
    try:
        check_declarations((), (step,), (), (), ())
    except ContractError:
        return False
    return True


def check_step_options(catalog: Catalog, step_options: dict[str, dict]) -> dict[str, dict]:
    """The user's options per step name, checked against what each step declares ("*": options for every step
    and backend, such as the model's trust flags, is passed as given)."""
    checked = {}
    for name, options in step_options.items():
        if name == "*":
            checked[name] = dict(options)
        elif name in catalog.steps:
            checked[name] = catalog.steps[name].check_options(options)
        else:
            raise UsageError(f"step_options names no installed step {name!r}; steps: "
                             f"{', '.join(sorted(catalog.steps))}")
    return checked


def _source_path(catalog: Catalog, model: Any, example_inputs: Any, scratch: Path) -> Path:
    if isinstance(model, (str, Path)):
        return Path(model)
    return save_in_memory_model(catalog, model, example_inputs, scratch)


def _check_trust(source: Source, trust_pickle: bool, model_factory: str | None = None) -> None:
    """A format whose files run code when loaded needs trust_pickle; with a model_factory the file is read as a
    state_dict with a loader that runs no code (its plugin refuses anything else without trust_pickle)."""
    if source.format.executes_code and not trust_pickle and not model_factory:
        raise UnsupportedModelError(
            f"{source.path} is a {source.format.name} file: loading it runs code stored inside it. If you trust "
            "where it came from, pass --trust-pickle (trust_pickle=True); better, save the model with "
            "torch.export or as ONNX")


def plan(model: Any, to: str, *, alternatives: int = 0, prefer: str = "balanced", example_inputs: Any = None,
         trust_pickle: bool = False, keep_layout: bool = False, compress: Iterable[str] = ()) -> PlanResult:
    """Plan the cheapest route (and `alternatives` more) from a model to a target without running anything.
    Raises NoRouteError (with what is reachable and what would connect it) when there is none."""
    catalog = load_catalog()
    target = constrained_target(catalog, to, keep_layout, compress).target
    weights_for(prefer)
    with tempfile.TemporaryDirectory(prefix="hub-plan-") as scratch:
        source = detect_source(catalog, _source_path(catalog, model, example_inputs, Path(scratch)), Path(scratch))
        _check_trust(source, trust_pickle)
        routes = plan_routes(catalog, source.state, target, source.bytes, prefer, count=1 + alternatives)
        if not routes:
            raise no_route_error(catalog, source, target)
        return PlanResult(source, target, routes, prefer)


def inspect(model: str | Path, *, trust_pickle: bool = False, inputs: Iterable[str] = ()) -> tuple[Source, ModelInfo]:
    """Detect a model file's format and describe it: inputs, outputs, parameter count."""
    catalog = load_catalog()
    with tempfile.TemporaryDirectory(prefix="hub-inspect-") as scratch:
        source = detect_source(catalog, Path(model), Path(scratch))
        _check_trust(source, trust_pickle)
        return source, describe(source, {"trust_pickle": trust_pickle,
                                         "inputs": [parse_input_flag(t).to_json() for t in inputs]})


def describe(source: Source, options: dict, cache: StepCache | None = None) -> ModelInfo:
    """The format plugin's description of the source (in a worker), remembered by content and options."""
    if source.format.describe is None:
        return ModelInfo(format=source.format.name)
    cache = cache or StepCache()
    key = step_key(kind="describe", source=digest_path(source.path), format=source.format.name, options=options,
                   versions=distribution_versions(source.format.requires))
    value = cache.recall(key)
    if value is None:
        try:
            described = call_worker("describe", {"ref": source.format.describe, "path": str(source.path),
                                                 "options": options}, timeout=DESCRIBE_TIMEOUT,
                                    python=python_for(load_catalog(), source.format.environment))
        except StepFailedError as error:  # the library could not read a file its format detector accepted
            raise UnsupportedModelError(
                f"{source.path} looks like {source.format.name} but cannot be read: {error.message}; it may be "
                "truncated or corrupt: export it again", detail=error.detail) from error
        value = cache.remember(key, described)
    return ModelInfo.from_json(value)


def _tolerance(target: Target, overrides: dict[str, float] | None) -> Tolerance:
    return replace(target.tolerance, **{k: v for k, v in (overrides or {}).items() if v is not None})


def _samples(calibration: str | Path | None, specs: tuple[TensorSpec, ...]) -> SampleSet:
    if calibration is not None:
        return load_samples(Path(calibration), specs)
    return random_samples(specs)


def _concrete_specs(specs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """A dynamic first dimension becomes a batch of one; a fixed one (a vector's length, a fixed batch) stays."""
    return tuple(replace(s, shape=(1, *s.shape[1:])) if s.shape and s.shape[0] is None else s for s in specs)


def _versions(route: Route, catalog: Catalog, target: Target) -> dict[str, str]:
    requires: tuple[str, ...] = ()
    for planned in route.steps:
        requires += planned.step.requires
    backend = catalog.backends.get(target.backend)
    return distribution_versions(requires + (backend.requires if backend else ()))


def convert(model: Any, to: str, *, output: str | Path | None = None, calibration: str | Path | None = None,
            example_inputs: Any = None, inputs: Iterable[str | TensorSpec] = (), prefer: str = "balanced",
            verify: bool = True, tolerance: dict[str, float] | None = None, dry_run: bool = False,
            trust_pickle: bool = False, model_factory: str | None = None, max_routes: int = 3,
            step_timeout: float = 1800.0, threads: int = 2, cache_dir: str | Path | None = None,
            use_cache: bool = True, step_options: dict[str, dict] | None = None, keep_layout: bool = False,
            memory_limit_mb: float | None = None, compress: Iterable[str] = (), check_on: Iterable[str] = (),
            custom_objects: Iterable[str] = (), trust_code: bool = False,
            progress: Progress | None = None) -> ConversionResult:
    """Convert a model (a path, or an in-memory model with example_inputs) to a target.

    Plans up to `max_routes` routes, runs the cheapest in isolated workers, verifies every step against the
    source on the calibration samples (or seeded random inputs), falls back to the next route when a step
    fails or drifts beyond the target's tolerance, and writes the result and report.json into `output`
    (default: ./hub-out). Nothing is written there unless the conversion succeeds. keep_layout: deliver a
    model whose inputs and outputs keep the source's layout (e.g. NCHW), even where a converter prefers NHWC.
    compress: requests such as "prune:0.5", "prune-channels:0.3", "distill:SAMPLES.npz", "int4-weights" (see
    hub.requests); the planner places the steps that meet them. check_on: platforms (e.g. "arm64") on which
    the result must compute what it computes locally (byte for byte for integer models); a mismatch fails.
    custom_objects: "MODULE[:NAME]" for Keras models holding custom classes; trust_code: allow code stored in
    a model (Keras Lambda layers) to run.
    """
    catalog = load_catalog()
    constrained = constrained_target(catalog, to, keep_layout, compress)
    target = constrained.target
    options = check_step_options(catalog, step_options or {})
    user_specs = [s if isinstance(s, TensorSpec) else parse_input_flag(s) for s in inputs]
    workspace = Path(tempfile.mkdtemp(prefix="hub-run-"))
    try:
        source = detect_source(catalog, _source_path(catalog, model, example_inputs, workspace), workspace)
        _check_trust(source, trust_pickle, model_factory)
        # more candidates than attempts: routes that repeat a step which already failed are skipped
        routes = plan_routes(catalog, source.state, target, source.bytes, prefer, count=max_routes * 4)
        if not routes:
            raise no_route_error(catalog, source, target)
        cache = StepCache(Path(cache_dir) if cache_dir else None, use_cache)
        model_options = {"trust_pickle": trust_pickle, "model_factory": model_factory, "trust_code": trust_code,
                         "custom_objects": list(custom_objects)}
        info = describe(source, {**model_options, "inputs": [s.to_json() for s in user_specs]}, cache)
        specs = _concrete_specs(merge_specs(info.inputs, user_specs))
        if not specs:
            raise UsageError(f"cannot tell the inputs of {source.path}: give them with --input NAME:SHAPE[:DTYPE]")
        samples = _samples(calibration, specs)
        specs = with_sample_shapes(specs, samples)
        report = _new_report(source, info, specs, target, _tolerance(target, tolerance), samples,
                             routes[:max_routes], prefer)
        report.target["compress"] = list(compress)
        if calibration is None and any(p.step.needs_calibration for r in routes for p in r.steps):
            report.warnings.append("no --calibration given: calibrated on seeded random inputs, which usually "
                                   "costs accuracy; pass real samples")
        if dry_run:
            return ConversionResult(None, report)
        _require_target_backend(catalog, target, installed=verify)
        options.setdefault("*", {}).update(model_options)
        settings = RunSettings(_tolerance(target, tolerance), verify, step_timeout, threads, step_options=options,
                               memory_limit_mb=memory_limit_mb, trait_options=constrained.trait_options,
                               tolerance_overridden=any(v is not None for v in (tolerance or {}).values()))
        attempts = RouteAttempts(progress)
        runner = RouteRunner(catalog, source, target, specs, samples, settings, cache, workspace, attempts)
        try:
            route, artifact, records, _ = runner.run_first_working(routes, max_routes)
        except HubError as error:
            error.report = attempts.recorded_in(report, catalog, target)  # type: ignore[attr-defined]
            report.error = error.message
            raise
        attempts.recorded_in(report, catalog, target)
        if runner.reference_note:
            report.warnings.append(runner.reference_note)
        report.route, report.steps = route.names, records
        report.samples["verification_samples"] = len(runner.verifier.feeds)
        report.samples["verification_held_out"] = runner.verification_held_out
        report.versions = _versions(route, catalog, target)
        out_dir = Path(output) if output is not None else Path("hub-out")
        destination = out_dir / _output_name(source.path, target.name, artifact)
        report.final = runner.final_record(artifact, destination, route, records)
        report.warnings += slower_than_source(report.final)
        if verify:
            report.final = replace(report.final, distributions=final_distributions(runner, artifact))
        for platform in check_on:
            report.final.platform_checks.append(_check_platform(catalog, runner, artifact, platform, progress))
        page = render_html(report.to_json())  # before anything is written: a rendering bug writes nothing
        write_atomically(artifact, destination)
        write_text_atomically(report.dumps(), out_dir / "report.json")
        write_text_atomically(page, out_dir / "report.html")
        return ConversionResult(destination, report)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


class RouteAttempts:
    """Progress that passes everything on and keeps, per route tried, the route and the steps that ran on it: a
    failed conversion's report draws each failed route up to its failing step from these."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress or SilentProgress()
        self.routes: list[Route] = []
        self.steps: list[list[StepRecord]] = []
        self.failures: list[RouteFailure] = []

    def route_started(self, route: Route, attempt: int) -> None:
        self.routes.append(route)
        self.steps.append([])
        self.progress.route_started(route, attempt)

    def step_started(self, planned: Any) -> None:
        self.progress.step_started(planned)

    def step_finished(self, record: StepRecord) -> None:
        self.steps[-1].append(record)
        self.progress.step_finished(record)

    def route_failed(self, failure: RouteFailure) -> None:
        self.failures.append(replace(failure, steps=tuple(self.steps[len(self.failures)])))
        self.progress.route_failed(failure)

    def measuring(self, what: str) -> None:
        self.progress.measuring(what)

    def recorded_in(self, report: Report, catalog: Catalog, target: Target) -> Report:
        """The report with the failed routes and every route tried among its planned routes (a fallback may lie
        beyond the first --max-routes candidates) and, until a route succeeds, the versions of all tried."""
        report.alternatives_tried = list(self.failures)
        planned = [r.to_json() for r in self.routes]
        report.planned += [r for r in planned if r not in report.planned]
        for route in self.routes:
            report.versions.update(_versions(route, catalog, target))
        return report


def slower_than_source(final: FinalRecord) -> list[str]:
    """A warning when the delivered model runs slower than its source (a quantization that kept much in higher
    precision, or a small model where quantizing costs more than it saves)."""
    if not final.latency_ms or not final.source_latency_ms or final.latency_ms <= final.source_latency_ms:
        return []
    return [f"the result runs slower than the source: {final.latency_ms:.3g} ms per batch-1 inference on "
            f"{final.backend}, the source {final.source_latency_ms:.3g} ms on its own backend"]


def final_distributions(runner: RouteRunner, artifact: Path) -> list[dict]:
    """The delivered model's outputs against the reference's, value by value (hub.distributions), paired as
    verification pairs them."""
    reference = runner.verifier.reference
    result = runner.verifier.run_outputs(artifact, runner.final_state)
    if reference is None or result is None or reference.path == artifact:
        return []
    try:
        pairs = pair_outputs(reference.outputs, result)
    except ValueError:  # outputs that do not line up: verification has said so already
        return []
    names = [reference.outputs.name(i) or f"output {i}" for i, _, _ in pairs]
    return output_distributions(names, [[sample[i] for i, _, _ in pairs] for sample in reference.outputs.samples],
                                [[sample[j] for _, j, _ in pairs] for sample in result.samples])


def _new_report(source: Source, info: ModelInfo, specs: tuple[TensorSpec, ...], target: Target,
                tolerance: Tolerance, samples: SampleSet, routes: list[Route], prefer: str) -> Report:
    return Report(
        source={"path": str(source.path), "format": source.format.name, "state": str(source.state),
                "bytes": source.bytes, "inputs": [s.to_json() for s in specs], "parameters": info.parameters},
        target={"name": target.name, "backend": target.backend, "requires": target.requires.describe(),
                "tolerance": tolerance.to_json()},
        samples={"origin": samples.origin, "count": samples.count},
        planned=[r.to_json() for r in routes], cost_weights=weights_for(prefer).to_json(),
    )


def _check_platform(catalog: Catalog, runner: RouteRunner, artifact: Path, platform: str,
                    progress: Progress | None) -> PlatformCheck:
    state = runner.final_state
    if progress is not None:
        progress.measuring(f"the same samples on {platform}")
    verifier = runner.verifier
    check = check_on_platform(catalog, platform, artifact, state, verifier.backend_for(state.format),
                              verifier.samples_for(state.layout), len(verifier.feeds),
                              runner.settings.threads, runner.settings.step_timeout)
    if not check.matches:
        raise FidelityError(f"on {platform} the model computes something else than locally: {check.first_mismatch}"
                            f" ({'byte-for-byte' if check.exact else 'tolerance'} comparison, max-abs "
                            f"{check.max_abs:.3g})")
    return check


def verify_on(model: str | Path, platform: str, *, calibration: str | Path | None = None,
              inputs: Iterable[str] = (), threads: int = 2) -> PlatformCheck:
    """Run a model file locally and on `platform` with the same samples; PlatformCheck says whether they match."""
    catalog = load_catalog()
    with tempfile.TemporaryDirectory(prefix="hub-verify-") as scratch:
        source = detect_source(catalog, Path(model), Path(scratch))
        info = describe(source, {"inputs": [parse_input_flag(t).to_json() for t in inputs]})
        specs = _concrete_specs(merge_specs(info.inputs, [parse_input_flag(t) for t in inputs]))
        samples = _samples(calibration, specs)
        samples_path = Path(scratch) / "samples.npz"
        save_samples(samples_path, samples.feeds(32))
        references = local_backends(catalog, source.state.format)
        if not references:
            raise MissingDependencyError(f"no installed backend runs {source.state.format} locally")
        return check_on_platform(catalog, platform, source.path, source.state, references[0], samples_path,
                                 min(samples.count, 32), threads)


def _require_target_backend(catalog: Catalog, target: Target, installed: bool) -> None:
    """The target's own backend must be declared by a working plugin and (installed) run here, or the delivered
    model could not be proven."""
    backend = catalog.backends.get(target.backend)
    if backend is None:
        broken = catalog.broken_owner(target.backend)
        if broken:
            raise PluginError(f"target {target.name!r} runs on backend {target.backend!r}, which comes from plugin "
                              f"{broken.name!r}, which is broken: {broken.error}")
        unknown = [record.name for record in catalog.broken if not record.backends]
        raise UsageError(f"target {target.name!r} (from {catalog.owner.get(target.name, '?')}) runs on backend "
                         f"{target.backend!r}, which no installed plugin provides; backends: "
                         f"{', '.join(sorted(catalog.backends))}"
                         + (f" (plugins that failed to load: {', '.join(unknown)})" if unknown else ""))
    missing = missing_for(backend, catalog) if installed else []
    if missing:
        raise MissingDependencyError(f"target {target.name!r} is verified on the {backend.name} backend, which "
                                     f"needs {', '.join(missing)}: {install_hint(backend.extra, missing)}")


def _output_name(source: Path, target: str, artifact: Path) -> str:
    """stem.target.ext, or stem.ext where the target is named like the extension (mindir, tflite)."""
    suffix = "" if artifact.is_dir() else artifact.suffix
    stem = source.name.split(".")[0]
    return f"{stem}{suffix}" if suffix == f".{target}" else f"{stem}.{target}{suffix}"
