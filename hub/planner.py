"""Route planning: the cheapest chains of steps from the source state to a state the target accepts.

Cost model. Each step declares what it expects to cost; a route costs the sum over its steps of

    w_seconds  * (seconds + seconds_per_mb * size of the step's input in MB)
  + w_fidelity * fidelity_loss          (expected drop in output cosine; 0 for lossless steps)
  + w_size     * size_ratio             (expected output size / input size)
  + w_hop                               (every step is a chance to fail and a worker to start)

The input size along a route is the source size times the size ratios of the steps before. `--prefer` picks
the weights (PREFERENCES): "fidelity" makes any loss dominate, "size" favours steps that shrink the model,
"speed" favours the fastest conversion. All terms are non-negative, so routes come out in order of cost by a
best-first search over simple paths (no state visited twice); ties break on fewer steps, then on step names,
so the order is deterministic. The graph has tens of states, so this enumerates the k cheapest exactly.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterator

from hub.declarations import Step, Target
from hub.errors import UsageError
from hub.plugins import Catalog, install_hint, missing_for
from hub.states import ModelState

MAX_STEPS = 8
MAX_EXPANSIONS = 50_000


@dataclass(frozen=True)
class Weights:
    seconds: float
    fidelity: float
    size: float
    hop: float

    def to_json(self) -> dict:
        return {"seconds": self.seconds, "fidelity": self.fidelity, "size": self.size, "hop": self.hop}


PREFERENCES = {
    "balanced": Weights(seconds=0.02, fidelity=100.0, size=0.5, hop=0.2),
    "fidelity": Weights(seconds=0.002, fidelity=1000.0, size=0.05, hop=0.2),
    "size": Weights(seconds=0.002, fidelity=20.0, size=5.0, hop=0.2),
    "speed": Weights(seconds=0.5, fidelity=20.0, size=0.5, hop=0.2),
}


def weights_for(prefer: str) -> Weights:
    if prefer not in PREFERENCES:
        raise UsageError(f"--prefer {prefer!r} is not one of: {', '.join(PREFERENCES)}")
    return PREFERENCES[prefer]


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    plugin: str
    kind: str
    source: ModelState
    result: ModelState
    seconds: float
    cost: float

    @property
    def name(self) -> str:
        return self.step.name

    def to_json(self) -> dict:
        return {
            "name": self.step.name,
            "plugin": self.plugin,
            "kind": self.kind,
            "from": str(self.source),
            "to": str(self.result),
            "expected_seconds": round(self.seconds, 3),
            "fidelity_loss": self.step.fidelity_loss,
            "size_ratio": self.step.size_ratio,
            "cost": round(self.cost, 4),
            "ladder": [dict(rung) for rung in self.step.ladder],
        }


@dataclass(frozen=True)
class Route:
    steps: tuple[PlannedStep, ...]
    cost: float

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def to_json(self) -> dict:
        return {"cost": round(self.cost, 4), "steps": [s.to_json() for s in self.steps]}


def step_cost(step: Step, input_mb: float, weights: Weights) -> tuple[float, float]:
    seconds = step.seconds + step.seconds_per_mb * input_mb
    cost = (weights.seconds * seconds + weights.fidelity * step.fidelity_loss
            + weights.size * step.size_ratio + weights.hop)
    return seconds, cost


def available_steps(catalog: Catalog) -> list[Step]:
    return [s for s in catalog.steps.values() if not missing_for(s, catalog)]


def enumerate_routes(
    catalog: Catalog, steps: list[Step], source: ModelState, target: Target, source_mb: float, weights: Weights
) -> Iterator[Route]:
    """Yield routes from source to target in order of cost (see the module docstring)."""
    ordered_steps = sorted(steps, key=lambda s: s.name)
    counter = 0
    frontier: list = [(0.0, 0, (), source, (), source_mb)]
    while frontier and counter < MAX_EXPANSIONS:
        cost, _, _, state, path, mb = heapq.heappop(frontier)
        counter += 1
        if target.requires.matches(state):
            yield Route(path, cost)
            continue
        if len(path) >= MAX_STEPS:
            continue
        visited = {source} | {p.result for p in path}
        for step in ordered_steps:
            if not step.accepts.matches(state):
                continue
            result = step.result_state(state)
            if result in visited or _adds_unrequested_traits(state, result, target):
                continue
            seconds, added = step_cost(step, mb, weights)
            planned = PlannedStep(step, catalog.owner.get(step.name, "?"), catalog.step_kind(step.name),
                                  state, result, seconds, added)
            new_path = path + (planned,)
            heapq.heappush(frontier, (cost + added, len(new_path), tuple(p.name for p in new_path), result,
                                      new_path, mb * step.size_ratio))


def _adds_unrequested_traits(state: ModelState, result: ModelState, target: Target) -> bool:
    """Compression is opt-in: a step may add a trait (pruned, clipped, ...) only when the target asks for it."""
    requested = target.requires.allowed.get("traits", frozenset())
    return bool(set(result.traits) - set(state.traits) - requested)


def plan_routes(
    catalog: Catalog, source: ModelState, target: Target, source_bytes: int, prefer: str = "balanced",
    count: int = 1,
) -> list[Route]:
    """The `count` cheapest routes using only installed steps (possibly fewer, possibly none).

    A route that leaves a format and comes back to it (ONNX -> TFLite -> ONNX) is a detour: it can only lose what
    a direct route keeps. It is offered when no direct route exists, or, after every direct route, when it ends
    with a step none of them ends with (a TFLite model whose TFLite quantizer refuses an operator that onnx2tf's
    quantizer takes): never to reach the same last step the long way round."""
    direct, detours = [], []
    for route in enumerate_routes(catalog, available_steps(catalog), source, target, source_bytes / 1e6,
                                  weights_for(prefer)):
        (detours if returns_to_a_format(source, route) else direct).append(route)
        if len(direct) >= count:
            break
    last_steps = {tuple(route.names[-1:]) for route in direct}
    return (direct + [route for route in detours if tuple(route.names[-1:]) not in last_steps])[:count]


def returns_to_a_format(source: ModelState, route: Route) -> bool:
    formats = [source.format] + [planned.result.format for planned in route.steps]
    visits = [f for i, f in enumerate(formats) if i == 0 or f != formats[i - 1]]
    return len(visits) != len(set(visits))


def reachable_states(steps: list[Step], source: ModelState) -> list[ModelState]:
    seen = {source}
    queue = [source]
    while queue:
        state = queue.pop()
        for step in steps:
            if step.accepts.matches(state):
                result = step.result_state(state)
                if result not in seen:
                    seen.add(result)
                    queue.append(result)
    return sorted(seen)


def explain_no_route(catalog: Catalog, source: ModelState, target: Target, source_bytes: int) -> str:
    """Why no installed route exists: what is reachable, what the target needs, and what would connect them."""
    reachable = reachable_states(available_steps(catalog), source)
    lines = [
        f"no route from {source} to target {target.name!r} (needs {target.requires.describe()})"
        + _reachable_targets_hint(catalog, reachable) + ".",
        "  reachable with what is installed: " + ", ".join(str(s) for s in reachable),
    ]
    every_step = list(catalog.steps.values())
    for route in enumerate_routes(catalog, every_step, source, target, source_bytes / 1e6,
                                  PREFERENCES["balanced"]):
        hints = []
        for planned in route.steps:
            missing = missing_for(planned.step, catalog)
            if missing:
                hints.append(f"{planned.name} needs {', '.join(missing)}: {install_hint(planned.step.extra, missing)}")
        lines.append("  a route exists once installed: " + " -> ".join(route.names))
        lines.extend("  " + h for h in dict.fromkeys(hints))
        break
    else:
        lines.append("  no installed or known plugin connects them; a plugin that converts to "
                     f"{target.requires.describe()} would (see `hub plugins`).")
    return "\n".join(lines)


def _reachable_targets_hint(catalog: Catalog, reachable: list[ModelState]) -> str:
    """The targets this source can reach instead (e.g. an already-quantized model reaches its own precision's
    target, never a float one: no step restores the float weights)."""
    names = sorted(name for name, target in catalog.targets.items()
                   if any(target.requires.matches(state) for state in reachable))
    if not names:
        return ""
    return "; targets it can reach: " + ", ".join(names)
