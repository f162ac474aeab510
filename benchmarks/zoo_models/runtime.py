"""Running models for the zoo with the real runtimes (the hub's own backend functions: ONNX Runtime, LiteRT,
TensorFlow), returning each sample's outputs by name."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo_models import Feed, Named, Prepared

THREADS = 2


def run_model(path: Path, feeds: list[Feed], layout: str = "source",
              source_shapes: frozenset = frozenset()) -> tuple[list[Named], list[float]]:
    """Each feed's outputs keyed by the model's output names, and the model's batch-1 latency (ms, median) on
    the first feed. `layout` "nhwc": the model takes and gives channels-last what the feeds hold channels-first,
    except outputs that already have one of `source_shapes` (the hub's verification reads them so too)."""
    from hub.verification import from_layout, to_layout

    runner, names_of, latency = _backend(Path(path))
    laid = [{name: to_layout(value, layout) for name, value in feed.items()} for feed in feeds]
    outputs = runner(Path(path), laid, THREADS)
    names = names_of(Path(path))
    named = [{name: from_layout(array, layout, source_shapes) for name, array in zip(names, sample)} for sample in outputs]
    return named, [latency(Path(path), laid[0], THREADS, 20)]


def _backend(path: Path):
    if path.suffix == ".onnx":
        from hub_onnxruntime import session

        return session.run_samples, session.output_names, session.median_latency_ms
    if path.suffix == ".tflite":
        from hub_litert import interpreter

        return interpreter.run_samples, interpreter.output_names, interpreter.median_latency_ms
    if path.is_dir() or path.suffix in (".keras", ".h5"):
        from hub_tensorflow import backend

        return backend.run_samples, backend.output_names, backend.median_latency_ms
    raise ValueError(f"the zoo runs no {path.suffix or 'folder'} models")


def renamed(outputs: list[Named], pairing: dict[str, str]) -> list[Named]:
    """Outputs renamed from the artifact's names to the reference's (`pairing`: artifact name -> reference name,
    from the report's per-output fidelity); names not in the pairing are kept."""
    return [{pairing.get(name, name): array for name, array in sample.items()} for sample in outputs]


def only_output(sample: Named) -> np.ndarray:
    (array,) = sample.values()
    return array


def reference(prepared: Prepared, feeds: list[Feed]) -> list[Named]:
    """A ZooModel.reference: the source run in its own framework's runtime."""
    return run_model(prepared.source, feeds)[0]
