"""Helpers that plugins share: timing an inference, running a library in a folder, magnitude thresholds.

Standard library and numpy only, and no import of the rest of the hub: the arm64 runner loads this file by its
path inside an emulated Python that has neither the hub nor its plugins.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

MIN_WARMUP_RUNS = 3
LAYERS_IN_NOTES = 40  # a report lists at most this many layers one by one


def latency_timings_ms(run_once: Callable[[], Any], repeats: int, warmup: int | None = None) -> list[float]:
    """Milliseconds of each of `repeats` calls of run_once (at least one), after `warmup` calls that are not
    counted (default: a tenth of the repeats, at least MIN_WARMUP_RUNS): caches, lazy allocations and thread
    pools are warm when timing starts."""
    repeats = max(1, int(repeats))
    for _ in range(max(MIN_WARMUP_RUNS, repeats // 10) if warmup is None else warmup):
        run_once()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_once()
        timings.append((time.perf_counter() - start) * 1000.0)
    return timings


def median_latency_ms(run_once: Callable[[], Any], repeats: int, warmup: int | None = None) -> float:
    """The median of latency_timings_ms: robust to the odd call a scheduler delays."""
    return statistics.median(latency_timings_ms(run_once, repeats, warmup))


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Run a block in `folder` (for libraries that read or write files in the current directory), then return."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def magnitude_threshold(magnitudes: np.ndarray, fraction: float) -> float:
    """The magnitude at or below which `fraction` of the values lie; -1 when the fraction selects none (so that
    zeroing everything at or below it zeroes nothing)."""
    count = int(round(fraction * magnitudes.size))
    if count <= 0:
        return -1.0
    return float(np.partition(magnitudes.ravel(), count - 1)[count - 1])


def exempt_layers(layers: Sequence[tuple[str, bool]], options: dict[str, Any]) -> dict[str, str]:
    """The layers a magnitude pruner leaves dense, with the reason: given (name, is depthwise) in graph order and
    the options exempt_first_layer and exempt_depthwise."""
    exempt: dict[str, str] = {}
    for index, (name, depthwise) in enumerate(layers):
        if index == 0 and options.get("exempt_first_layer"):
            exempt[name] = "first layer: few weights, and every later feature depends on it"
        elif depthwise and options.get("exempt_depthwise"):
            exempt[name] = "depthwise convolution: one small filter per channel, pruning it removes features"
    return exempt


def sparsity_notes(layer_zeros: dict[str, tuple[int, int]], prunable: set[str], exempt: dict[str, str],
                   parameters: int) -> dict[str, Any]:
    """What a magnitude pruner reports: given each weight layer's (zero count, size) in graph order, the names
    it pruned, the exempt ones with the reason and the model's parameter count."""
    def zeros(names: list[str]) -> tuple[int, int]:
        return sum(layer_zeros[n][0] for n in names), sum(layer_zeros[n][1] for n in names)

    pruned_zeros, pruned_total = zeros([n for n in layer_zeros if n in prunable])
    all_zeros, all_total = zeros(list(layer_zeros))
    per_layer = {name: round(count / max(size, 1), 4) for name, (count, size) in layer_zeros.items()}
    return {
        "sparsity": round(pruned_zeros / max(pruned_total, 1), 4),          # over the prunable weights
        "sparsity_all_weights": round(all_zeros / max(all_total, 1), 4),    # weight layers incl. exempt ones
        "sparsity_all_parameters": round(all_zeros / max(parameters, 1), 4),
        "zero_weights": all_zeros,
        "layers_pruned": len(prunable),
        "layer_sparsity": dict(list(per_layer.items())[:LAYERS_IN_NOTES]),
        "layer_sparsity_range": [min(per_layer.values(), default=0.0), max(per_layer.values(), default=0.0)],
        "exempt_layers": exempt,
    }
