"""The onnx-reference backend: onnx.reference.ReferenceEvaluator, for models ONNX Runtime cannot load."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hub.errors import UnsupportedModelError
from hub_onnx.model_file import graph_inputs, load_model


def output_names(model_path: Path) -> list[str]:
    """The graph's output names, in the order run_samples returns the outputs."""
    return [output.name for output in load_model(Path(model_path)).graph.output]


def run_samples(model_path: Path, samples: list[dict[str, np.ndarray]], threads: int) -> list[list[np.ndarray]]:
    """One list of outputs per batch-1 feed; one unnamed array feeds a one-input model."""
    from onnx.reference import ReferenceEvaluator

    model = load_model(Path(model_path))
    try:
        evaluator = ReferenceEvaluator(model)
    except Exception as error:  # the evaluator's own message says which operator it lacks
        raise UnsupportedModelError(f"the ONNX reference evaluator cannot run {Path(model_path).name}: {error}"
                                    ) from error
    # Old exports (IR < 4) list every initializer among the graph inputs too: only the others are fed.
    names = [spec.name for spec in graph_inputs(model)]
    results = []
    for sample in samples:
        feed = sample if set(names) <= set(sample) else dict(zip(names, sample.values()))
        results.append([np.asarray(o) for o in evaluator.run(None, {n: feed[n] for n in names})])
    return results
