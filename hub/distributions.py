"""How a result's output values spread around the source's: what the HTML report draws per output.

A cosine and a max-abs say how far apart two models are; they do not say whether a few values are far off or
all values moved a little. `output_distributions` keeps enough to see that: a histogram of the absolute
errors over every value, their quantiles, and a small deterministic sample of (source, result) pairs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

HISTOGRAM_BINS = 30
SAMPLE_POINTS = 400
WORST_POINTS = 8  # the largest errors always join the sample, so outliers are never sampled away
SAMPLE_SEED = 0
MAX_VALUES = 2_000_000  # per output; beyond it every n-th value is compared (`every` says n)


def output_distributions(names: Sequence[str], reference: list[list[np.ndarray]],
                         candidate: list[list[np.ndarray]], max_points: int = SAMPLE_POINTS) -> list[dict]:
    """Per output (outputs aligned by position, one list of arrays per sample): the absolute error's histogram
    (`error_histogram`: `edges`, `counts`, linear bins from 0 to the largest error), `error_quantiles` (p50, p90,
    p99, max, mean), `values` (finite values compared), `every` (1, or n when only every n-th value of a large
    output was), `nonfinite` (values where either side is NaN or infinite), `shape`, and `sample`: up to
    `max_points` (source, result) pairs, the same ones on every run.
    Raises ValueError when the two sides do not have the same number of values per output."""
    count = min((len(s) for s in reference), default=0)
    return [_distribution(names[j] if j < len(names) else f"output_{j}",
                          [s[j] for s in reference], [s[j] for s in candidate], max_points)
            for j in range(count)]


def _distribution(name: str, reference: list[np.ndarray], candidate: list[np.ndarray], max_points: int) -> dict:
    total = sum(np.size(a) for a in reference)
    if total != sum(np.size(a) for a in candidate):
        raise ValueError(f"output {name}: the result has {sum(np.size(a) for a in candidate)} values where the "
                         f"source has {total}")
    stride = -(-total // MAX_VALUES)
    source = np.concatenate([_every(a, stride) for a in reference])
    result = np.concatenate([_every(a, stride) for a in candidate])
    finite = np.isfinite(source) & np.isfinite(result)
    source, result = source[finite], result[finite]
    errors = np.abs(source - result)
    return {
        "name": name,
        "shape": list(np.shape(reference[0])) if reference else [],
        "values": int(errors.size),
        "every": int(stride),
        "nonfinite": int((~finite).sum()),
        "error_histogram": _histogram(errors),
        "error_quantiles": _quantiles(errors),
        "sample": _sample(source, result, errors, max_points),
    }


def _every(array: np.ndarray, stride: int) -> np.ndarray:
    """Every stride-th value as float64: a segmentation map's millions of values need not all be held twice.
    Strings and booleans have no distance to draw: none of their values."""
    array = np.asarray(array)
    if array.dtype.kind in "OUSb":
        return np.zeros(0)
    return array.ravel()[::stride].astype(np.float64)


def _histogram(errors: np.ndarray) -> dict:
    top = float(errors.max()) if errors.size else 0.0
    counts, edges = np.histogram(errors, bins=HISTOGRAM_BINS, range=(0.0, top if top > 0 else 1.0))
    return {"edges": [_short(e) for e in edges], "counts": [int(c) for c in counts]}


def _quantiles(errors: np.ndarray) -> dict:
    if not errors.size:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    p50, p90, p99 = np.quantile(errors, [0.5, 0.9, 0.99])
    return {"p50": _short(p50), "p90": _short(p90), "p99": _short(p99), "max": _short(errors.max()),
            "mean": _short(errors.mean())}


def _sample(source: np.ndarray, result: np.ndarray, errors: np.ndarray, max_points: int) -> dict:
    """A seeded random choice of pairs plus the worst ones, in index order: the same report on every run."""
    if source.size <= max_points:
        chosen = np.arange(source.size)
    else:
        worst = np.argsort(-errors, kind="stable")[:WORST_POINTS]
        rest = np.random.default_rng(SAMPLE_SEED).choice(source.size, size=max_points - len(worst), replace=False)
        chosen = np.unique(np.concatenate([worst, rest]))
    return {"source": [_short(v) for v in source[chosen]], "result": [_short(v) for v in result[chosen]]}


def _short(value: float) -> float:
    return float(f"{float(value):.5g}")
