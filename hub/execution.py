"""Step execution: a step's options, its cache key, and its run in a worker on a private copy of its input."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hub.cache import StepCache, code_digest, copy_artifact, digest_path, distribution_versions, step_key
from hub.declarations import LATER_PRECISIONS, Step, Target
from hub.errors import StepFailedError
from hub.planner import PlannedStep
from hub.plugins import Catalog
from hub.states import TensorSpec
from hub.verification import Workspace, to_layout

SELF_BOUND_MARGIN = 1.25


@dataclass(frozen=True)
class StepOutput:
    path: Path
    notes: dict[str, Any]
    cached: bool


class StepExecutor:
    """Runs steps for one source and target, or serves their outputs from the cache."""

    def __init__(self, workspace: Workspace, catalog: Catalog, target: Target, source_path: Path,
                 inputs: tuple[TensorSpec, ...], calibration_path: Path, step_options: dict[str, dict],
                 trait_options: dict[str, dict], cache: StepCache) -> None:
        self.workspace, self.catalog, self.target, self.inputs = workspace, catalog, target, inputs
        self.source_path, self.source_digest = source_path, digest_path(source_path)
        self.calibration_path = calibration_path
        self.step_options, self.trait_options, self.cache = step_options, trait_options, cache

    def options(self, planned: PlannedStep, later_precisions: tuple[str, ...] = ()) -> dict[str, Any]:
        """Defaults, then the target's, the requested traits', the user's for this step and for every step."""
        options = {**planned.step.defaults(), **self.target.options}
        for trait in set(planned.result.traits) - set(planned.source.traits):
            options.update(self.trait_options.get(trait, {}))
        options.update(self.step_options.get(planned.name, {}))
        options.update(self.step_options.get("*", {}))
        options["source_path"] = str(self.source_path)  # a teacher for distillation, a reference for others
        if planned.step.wants_later_precisions:  # only there: other steps' cache keys stay route-independent
            options[LATER_PRECISIONS] = sorted(set(later_precisions))
        return options

    def key(self, planned: PlannedStep, artifact: Path, options: dict) -> str:
        record = next((p for p in self.catalog.plugins if p.name == planned.plugin), None)
        keyed = {k: v for k, v in options.items() if k != "source_path"}
        files = {k: digest_path(Path(v)) for k, v in keyed.items() if k in planned.step.path_options() and v}
        return step_key(
            input=digest_path(artifact), step=planned.name, produces=dict(planned.step.produces),
            options=keyed, files=files, inputs=[s.to_json() for s in self.inputs],
            teacher=self.source_digest,
            calibration=digest_path(self.calibration_for(planned)) if planned.step.needs_calibration else None,
            plugin=record.origin if record else None, code=code_digest(planned.step.run),
            versions=distribution_versions(planned.step.requires),
        )

    def calibration_for(self, planned: PlannedStep) -> Path:
        """The calibration samples in the layout of the step's input: a quantizer of a graph a converter made
        channels-last must be fed channels-last arrays."""
        layout = planned.source.layout
        if layout == "source":
            return self.calibration_path
        path = self.calibration_path.with_name(f"calibration-{layout}.npz")
        if not path.exists():
            with np.load(self.calibration_path, allow_pickle=False) as arrays:
                np.savez(path, **{name: to_layout(arrays[name], layout) for name in arrays.files})
        return path

    def run(self, planned: PlannedStep, artifact: Path, later_precisions: tuple[str, ...] = (),
            rung: Mapping[str, Any] | None = None) -> StepOutput:
        """The step's output for this input: from the cache, or run in a worker and stored there. rung: one of the
        step's ladder of option overrides, applied over everything else."""
        options = {**self.options(planned, later_precisions), **(rung or {})}
        key = self.key(planned, artifact, options)
        cached = self.cache.lookup(key)
        if cached:
            output, meta = cached
            return StepOutput(output, meta.get("notes", {}), True)
        output, notes = self._execute(planned, artifact, options)
        return StepOutput(self.cache.store(key, output, {"notes": notes, "step": planned.name}), notes, False)

    def _execute(self, planned: PlannedStep, artifact: Path, options: dict) -> tuple[Path, dict]:
        folder = self.workspace.scratch(planned.name)
        (folder / "input").mkdir()
        private_input = folder / "input" / artifact.name
        copy_artifact(artifact, private_input)  # steps get a copy: some libraries rewrite their input
        workdir = folder / "work"
        workdir.mkdir()
        value = self.workspace.call("step", {"ref": planned.step.run, "context": {
            "input_path": str(private_input), "workdir": str(workdir), "options": options,
            "inputs": [s.to_json() for s in self.inputs],
            "calibration": str(self.calibration_for(planned)) if planned.step.needs_calibration else None,
        }}, timeout=worker_timeout(planned.step, options, self.workspace.timeout), cwd=workdir,
            environment=planned.step.environment)
        output = Path(value["path"]).resolve()
        if not output.exists() or workdir.resolve() not in output.parents:
            raise StepFailedError(f"step {planned.name} returned {output}, which is not a file it wrote in its "
                                  "work folder (a bug in its plugin)")
        return output, value.get("notes", {})


def worker_timeout(step: Step, options: dict, default: float) -> float:
    """The step's declared timeout (or `default`), raised for a step that bounds its own wall time (its
    time_budget_option) to that bound plus a margin for its loading and saving: a user who gives a training step
    an hour must not see it killed at the declared half hour."""
    declared = step.timeout or default
    budget = options.get(step.time_budget_option) if step.time_budget_option else None
    if budget is None:
        return declared
    return max(declared, float(budget) * SELF_BOUND_MARGIN + 60.0)
