"""Benchmark hub.convert against the source model and against doing cpu-int8 by hand.

For each model (DigitsNet trained on scikit-learn's digits; EfficientNet-Lite0 with ImageNet weights) and each
usable target, converts the torch.export .pt2 with hub.convert and measures, in this one process: conversion
seconds, sizes, batch-1 latency on 2 threads (the source in PyTorch eager fp32, ONNX results in ONNX Runtime,
TFLite results in LiteRT) and fidelity on held-out samples that calibration never saw. A TFLite result whose
state ends in "/nhwc" takes channels-last inputs and gives channels-last outputs: samples are moved to its layout
and its outputs back (hub.verification.to_layout / from_layout) before comparing with the source. The cpu-int8 baseline is what a user writes by
hand from ONNX Runtime's docs: torch.onnx.export(dynamo=True), then quantize_static with the hub's settings.

    .venv/bin/python benchmarks/run.py [--quick]

writes benchmarks/results/results.json and results.md; converted files go to benchmarks/work/ (ignored).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work"
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

THREADS = 2
ONNX_TARGETS = ("cpu-int8", "onnxruntime-cpu", "onnxruntime-fp16", "cpu-int8-dynamic")
TFLITE_TARGETS = ("tflite", "tflite-fp16", "tflite-dynamic", "tflite-arm")
TARGETS = ONNX_TARGETS + TFLITE_TARGETS
CONFIDENT_SOFTMAX = 0.5
INPUT_NAME = "image"


@dataclass
class Model:
    name: str
    module: Any
    program_path: Path
    calibration: np.ndarray
    heldout: np.ndarray
    calibration_path: Path
    latency_repeats: int
    judged: bool = False  # the cpu-int8 acceptance criteria apply to this model
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fidelity:
    samples: int
    cosine: float
    top1: float
    confident_top1: float | None
    confident_samples: int
    top5: float


@dataclass
class Row:
    model: str
    target: str
    kind: str  # "hub" or "by hand"
    route: list[str] = field(default_factory=list)
    seconds: float | None = None
    bytes: int | None = None
    latency_ms: float | None = None
    fidelity: Fidelity | None = None
    error: str | None = None
    detail: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- models


def digits_model(work: Path) -> Model:
    import torch
    from digits import digits_arrays, train

    images, labels = digits_arrays()
    started = time.perf_counter()
    module = train(images[:1400], labels[:1400])
    with torch.no_grad():
        accuracy = float((module(torch.from_numpy(images[1400:])).argmax(1).numpy() == labels[1400:]).mean())
    return _save(Model("DigitsNet", module, work / "digits.pt2", images[:128], images[1400:],
                       work / "digits.calib.npz", latency_repeats=300,
                       notes={"train_seconds": round(time.perf_counter() - started, 1),
                              "heldout_accuracy": round(accuracy, 4)}))


def efficientnet_model(work: Path) -> Model:
    from pretrained import CALIBRATION_PHOTOS, HELDOUT_PHOTOS, calibration_and_heldout, efficientnet_lite0

    calibration, heldout = calibration_and_heldout(calibration_count=128, heldout_count=200, seed=0)
    return _save(Model("EfficientNet-Lite0", efficientnet_lite0(), work / "efficientnet_lite0.pt2", calibration,
                       heldout, work / "efficientnet_lite0.calib.npz", latency_repeats=60, judged=True,
                       notes={"calibration_photos": list(CALIBRATION_PHOTOS), "heldout_photos": list(HELDOUT_PHOTOS),
                              "preprocessing": "RGB, (x - 127) / 128 (EfficientNet-Lite's TF original)"}))


def _save(model: Model) -> Model:
    import torch

    program = torch.export.export(model.module, (torch.from_numpy(model.calibration[:1]),))
    torch.export.save(program, model.program_path)
    np.savez(model.calibration_path, **{INPUT_NAME: model.calibration})
    return model


# ---------------------------------------------------------------- measuring


def torch_outputs(module: Any, samples: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([module(torch.from_numpy(samples[i:i + 1])).numpy() for i in range(len(samples))])


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_outputs(session: Any, samples: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: samples[i:i + 1]})[0] for i in range(len(samples))])


def median_ms(call: Callable[[], Any], repeats: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def torch_latency_ms(module: Any, sample: np.ndarray, repeats: int) -> float:
    import torch

    tensor = torch.from_numpy(sample)
    with torch.inference_mode():
        return median_ms(lambda: module(tensor), repeats)


def ort_latency_ms(session: Any, sample: np.ndarray, repeats: int) -> float:
    feed = {session.get_inputs()[0].name: sample}
    return median_ms(lambda: session.run(None, feed), repeats)


def layout_of(state: str) -> str:
    """The I/O layout of a report's state string ("tflite/int8/builtin/nhwc" -> "nhwc"; else "source")."""
    return "nhwc" if state.split("+", 1)[0].endswith("/nhwc") else "source"


def litert_infer(path: Path, layout: str, example: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function running one source-layout batch-1 sample on LiteRT (THREADS threads, default delegates) and
    returning its first output in the source's layout; int8 inputs are quantized and outputs dequantized by the
    hub's own feeding code, so the numbers are the ones the hub verified."""
    from hub.verification import from_layout, to_layout
    from hub_litert.interpreter import inference

    infer = inference(path, THREADS, {INPUT_NAME: to_layout(example, layout)})
    return lambda sample: from_layout(infer({INPUT_NAME: to_layout(sample, layout)})[0], layout)


def litert_outputs(path: Path, layout: str, samples: np.ndarray) -> np.ndarray:
    infer = litert_infer(path, layout, samples[:1])
    return np.concatenate([infer(samples[i:i + 1]) for i in range(len(samples))])


def litert_latency_ms(infer: Callable[[np.ndarray], np.ndarray], sample: np.ndarray, repeats: int) -> float:
    """Like ort_latency_ms; feeding (the layout move, int8 quantizing, dequantizing) is counted, as in the hub."""
    return median_ms(lambda: infer(sample), repeats)


def fidelity(reference: np.ndarray, result: np.ndarray) -> Fidelity:
    reference, result = reference.astype(np.float64), result.astype(np.float64)
    cosines = (reference * result).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(result, axis=1)
                                             + 1e-12)
    top1_ref, top1_res = reference.argmax(1), result.argmax(1)
    agree = top1_ref == top1_res
    shifted = np.exp(reference - reference.max(1, keepdims=True))
    confident = (shifted / shifted.sum(1, keepdims=True)).max(1) > CONFIDENT_SOFTMAX
    top5 = np.argsort(-result, axis=1)[:, :5]
    return Fidelity(
        samples=len(reference), cosine=float(cosines.mean()), top1=float(agree.mean()),
        confident_top1=float(agree[confident].mean()) if confident.any() else None,
        confident_samples=int(confident.sum()), top5=float((top5 == top1_ref[:, None]).any(1).mean()))


def file_bytes(path: Path) -> int:
    """A model's bytes, external data files next to it included."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def measure(row: Row, model: Model, path: Path, reference: np.ndarray, layout: str = "source") -> None:
    """Size and held-out fidelity now; latency later, in `measure_latencies`, all artifacts interleaved."""
    row.bytes = file_bytes(path)
    row.notes.update({"artifact": str(path), "layout": layout,
                      "backend": "litert" if path.suffix == ".tflite" else "onnxruntime"})
    outputs = (litert_outputs(path, layout, model.heldout) if row.notes["backend"] == "litert"
               else ort_outputs(ort_session(path), model.heldout))
    row.fidelity = fidelity(reference, outputs)


def measure_latencies(model: Model, rows: list[Row], rounds: int = 3) -> float:
    """Batch-1 latency of the source (PyTorch eager) and every artifact (ONNX Runtime or LiteRT), in interleaved
    rounds: each round takes a median per model, the best round counts. Other work on the machine (it is shared)
    then slows all candidates alike instead of whichever happened to run during a burst."""
    sample = model.heldout[:1]
    measured = [row for row in rows if row.error is None]
    timers: list[Callable[[], float]] = []
    for row in measured:
        path = Path(row.notes["artifact"])
        if row.notes["backend"] == "litert":
            infer = litert_infer(path, row.notes["layout"], sample)
            timers.append(lambda infer=infer: litert_latency_ms(infer, sample, model.latency_repeats))
        else:
            session = ort_session(path)
            timers.append(lambda session=session: ort_latency_ms(session, sample, model.latency_repeats))
    source, results = [], [[] for _ in measured]
    for _ in range(rounds):
        source.append(torch_latency_ms(model.module, sample, model.latency_repeats))
        for times, timer in zip(results, timers):
            times.append(timer())
    for row, times in zip(measured, results):
        row.latency_ms = min(times)
        row.notes["latency_rounds_ms"] = [round(t, 4) for t in times]
    return min(source)


# ---------------------------------------------------------------- converting


class Timeline:
    """A hub Progress that notes when each phase began, to tell where conversion seconds go."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str]] = []

    def _note(self, what: str) -> None:
        self.events.append((time.perf_counter(), what))

    def route_started(self, route: Any, attempt: int) -> None:
        self._note(f"route {attempt}")

    def step_started(self, planned: Any) -> None:
        self._note(f"step {planned.step.name} (run and verify)")

    def step_finished(self, record: Any) -> None:
        self._note(f"after {record.name}")

    def route_failed(self, failure: Any) -> None:
        self._note("route failed")

    def measuring(self, what: str) -> None:
        self._note(f"measure {what}")

    def phases(self, started: float) -> list[tuple[str, float]]:
        """(phase, seconds) from hub.convert's call to its return: "setup" is planning, describing the source
        and running it for reference outputs."""
        marks = [(started, "setup"), *self.events, (time.perf_counter(), "end")]
        return [(name, round(marks[i + 1][0] - at, 2)) for i, (at, name) in enumerate(marks[:-1])]


def hub_row(model: Model, target: str, work: Path, reference: np.ndarray) -> Row:
    import hub

    row = Row(model.name, target, "hub")
    try:
        hub.plan(model.program_path, to=target)
    except hub.NoRouteError as error:
        row.error = f"not usable here: {error}"
        return row
    output = work / f"hub-{target}"
    shutil.rmtree(output, ignore_errors=True)
    timeline = Timeline()
    started = time.perf_counter()
    try:
        result = hub.convert(model.program_path, to=target, calibration=model.calibration_path, output=output,
                             use_cache=False, threads=THREADS, progress=timeline)
    except hub.HubError as error:
        row.error = f"{type(error).__name__}: {error}"
        row.detail = getattr(error, "detail", None)
        return row
    row.seconds = time.perf_counter() - started
    row.route = list(result.report.route)
    row.notes["timeline"] = timeline.phases(started)
    final = result.report.final
    row.notes["state"] = final.state
    row.notes.update({"hub_verification": final.fidelity.to_json() if final and final.fidelity else None,
                 "hub_latency_ms": final.latency_ms if final else None,
                 "steps": [{"name": s.name, "seconds": round(s.seconds, 2), "notes": s.notes}
                           for s in result.report.steps]})
    measure(row, model, result.path, reference, layout_of(final.state))
    return row


def by_hand(model: Model, folder: Path, *flags: str) -> tuple[float, dict[str, float]]:
    """Run benchmarks/by_hand.py in its own process; its wall seconds and its phase seconds."""
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, str(ROOT / "benchmarks" / "by_hand.py"), str(model.program_path),
               str(model.calibration_path), str(folder), *flags]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def by_hand_rows(model: Model, work: Path, reference: np.ndarray) -> tuple[list[Row], Path]:
    """fp32 ONNX and cpu-int8 by hand, plus the quant_pre_process variant ONNX Runtime's docs recommend.
    Returns the rows and the fp32 ONNX file every size ratio is measured against."""
    seconds, phases = by_hand(model, work / "by-hand")
    fp32 = work / "by-hand" / "model.onnx"
    export = Row(model.name, "fp32 ONNX", "by hand", route=["torch.onnx.export(dynamo=True)"],
                 seconds=phases["imports"] + phases["export"], notes={"phases": phases})
    hand = Row(model.name, "cpu-int8", "by hand", route=["torch.onnx.export(dynamo=True)", "quantize_static"],
               seconds=seconds, notes={"phases": phases})
    pre_seconds, pre_phases = by_hand(model, work / "by-hand-pre", "--pre-process")
    pre = Row(model.name, "cpu-int8", "by hand + pre-process",
              route=["torch.onnx.export(dynamo=True)", "quant_pre_process", "quantize_static"],
              seconds=pre_seconds, notes={"phases": pre_phases})
    for row, path in ((export, fp32), (hand, work / "by-hand" / "model.int8.onnx"),
                      (pre, work / "by-hand-pre" / "model.int8.onnx")):
        measure(row, model, path, reference)
    return [export, hand, pre], fp32


# ---------------------------------------------------------------- the run


def benchmark(model: Model, work: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(THREADS)
    print(f"== {model.name}: {len(model.calibration)} calibration, {len(model.heldout)} held-out samples",
          flush=True)
    reference = torch_outputs(model.module, model.heldout)
    rows, fp32 = by_hand_rows(model, work, reference)
    for row in rows:
        print(f"  by hand {row.target} ({row.kind}): {row.seconds:.1f} s", flush=True)
    for target in TARGETS:
        row = hub_row(model, target, work, reference)
        rows.append(row)
        print(f"  hub {target}: " + (row.error or f"{row.seconds:.1f} s via {' > '.join(row.route)}"), flush=True)
    source_ms = measure_latencies(model, rows)
    return {"model": model.name, "source_bytes": model.program_path.stat().st_size,
            "fp32_onnx_bytes": file_bytes(fp32), "source_latency_ms": source_ms,
            "calibration_samples": len(model.calibration), "heldout_samples": len(model.heldout),
            "notes": model.notes, "rows": [_row_json(r) for r in rows]}


def _row_json(row: Row) -> dict[str, Any]:
    data = asdict(row)
    for key in ("seconds", "latency_ms"):
        if data[key] is not None:
            data[key] = round(data[key], 4)
    return data


def compare(entry: dict[str, Any]) -> None:
    """Add the ratios the table shows: sizes, latency vs eager, hub vs by hand."""
    hand = next(r for r in entry["rows"] if r["kind"] == "by hand" and r["target"] == "cpu-int8")
    float_tflite = next((r for r in entry["rows"] if r["kind"] == "hub" and r["target"] == "tflite"
                         and r["bytes"] is not None), None)
    entry["float_tflite_bytes"] = float_tflite["bytes"] if float_tflite else None
    for row in entry["rows"]:
        if row["bytes"] is None:
            continue
        row["size_vs_fp32_onnx"] = row["bytes"] / entry["fp32_onnx_bytes"]
        if row["target"] in TFLITE_TARGETS and float_tflite:
            row["size_vs_float_tflite"] = row["bytes"] / float_tflite["bytes"]
        row["size_vs_source"] = row["bytes"] / entry["source_bytes"]
        row["latency_vs_source"] = row["latency_ms"] / entry["source_latency_ms"]
        if row["kind"] == "hub" and row["target"] == "cpu-int8":
            row["seconds_vs_by_hand"] = row["seconds"] / hand["seconds"]
            row["latency_vs_by_hand"] = row["latency_ms"] / hand["latency_ms"]


def acceptance(entry: dict[str, Any]) -> dict[str, Any]:
    """The cpu-int8 acceptance criteria (held-out numbers)."""
    hub_row_ = next((r for r in entry["rows"] if r["kind"] == "hub" and r["target"] == "cpu-int8"), None)
    hand = next(r for r in entry["rows"] if r["kind"] == "by hand" and r["target"] == "cpu-int8")
    if hub_row_ is None or hub_row_["fidelity"] is None:
        return {"converted": False}
    got, ref = hub_row_["fidelity"], hand["fidelity"]
    checks = {
        "top5_containment >= 0.99": got["top5"] >= 0.99,
        "confident_top1 >= 0.99": got["confident_top1"] is not None and got["confident_top1"] >= 0.99,
        "mean cosine >= 0.98": got["cosine"] >= 0.98,
        "top1 agreement >= by hand": got["top1"] >= ref["top1"],
        "cosine >= by hand": got["cosine"] >= ref["cosine"],
        "size <= 0.30 x fp32 ONNX": hub_row_["size_vs_fp32_onnx"] <= 0.30,
        "latency < PyTorch eager fp32": hub_row_["latency_ms"] < entry["source_latency_ms"],
        "latency <= 1.10 x by hand": hub_row_["latency_ms"] <= 1.10 * hand["latency_ms"],
    }
    return {"converted": True, "checks": checks, "all_pass": all(checks.values())}


def tflite_arm_acceptance(entry: dict[str, Any]) -> dict[str, Any]:
    """The tflite-arm acceptance criteria (held-out numbers, LiteRT against PyTorch eager)."""
    row = next((r for r in entry["rows"] if r["kind"] == "hub" and r["target"] == "tflite-arm"), None)
    if row is None or row["fidelity"] is None:
        return {"converted": False}
    got = row["fidelity"]
    ratio = row.get("size_vs_float_tflite")
    checks = {
        "top5_containment >= 0.99": got["top5"] >= 0.99,
        "confident_top1 >= 0.99": got["confident_top1"] is not None and got["confident_top1"] >= 0.99,
        "mean cosine >= 0.98": got["cosine"] >= 0.98,
        "int8 size <= 0.30 x float TFLite": ratio is not None and ratio <= 0.30,
    }
    return {"converted": True, "checks": checks, "all_pass": all(checks.values())}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Benchmark: hub.convert vs by hand",
        "",
        f"{results['machine']}; {THREADS} threads; batch 1; latency = median; fidelity on held-out samples "
        "against the source in PyTorch eager fp32 (cosine of logits, top-1 agreement, top-1 agreement where "
        "the source's softmax > 0.5, source top-1 within the result's top 5). Latency: best of 3 interleaved "
        "rounds, each a median; ONNX results run in ONNX Runtime, tflite* results in LiteRT (default delegates; "
        "int8 I/O quantized and dequantized in the timed call; NHWC results fed and read in their layout, fidelity "
        "compared in the source's). Size of a tflite* result: vs fp32 ONNX (vs the float `tflite` result). "
        "By hand = benchmarks/by_hand.py run as its own process.",
        "",
        "| model | target | route | conversion s | vs by hand | size vs fp32 ONNX | latency ms (result / eager "
        "= ratio) | cosine | top-1 | confident top-1 (n) | top-5 |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for entry in results["models"]:
        for row in entry["rows"]:
            target = row["target"] if row["kind"] == "hub" else f"{row['target']} ({row['kind']})"
            if row["error"]:
                reason = row["error"].strip().splitlines()[-1].strip()  # the failing step's own reason
                lines.append(f"| {entry['model']} | {target} | failed: {_cell(reason)} | | | | | | | | |")
                continue
            f = row["fidelity"]
            confident = "n/a" if f["confident_top1"] is None else f"{f['confident_top1']:.1%}"
            overhead = f"{row['seconds_vs_by_hand']:.2f}x" if "seconds_vs_by_hand" in row else ""
            size = f"{row['size_vs_fp32_onnx']:.3f}"
            if "size_vs_float_tflite" in row:
                size += f" ({row['size_vs_float_tflite']:.3f})"
            lines.append(
                f"| {entry['model']} | {target} | {_cell(' > '.join(row['route']))} | {row['seconds']:.1f} | "
                f"{overhead} | {size} | {row['latency_ms']:.3f} / "
                f"{entry['source_latency_ms']:.3f} = {row['latency_vs_source']:.2f} | {f['cosine']:.4f} | "
                f"{f['top1']:.1%} | {confident} ({f['confident_samples']}) | {f['top5']:.1%} |")
    lines += ["", "Sizes: " + "; ".join(
        f"{e['model']}: source .pt2 {e['source_bytes'] / 1e6:.2f} MB, fp32 ONNX {e['fp32_onnx_bytes'] / 1e6:.2f} MB"
        for e in results["models"] if "source_bytes" in e) + "."]
    lines += [f"- {e['model']}: benchmark failed: {e['error']}" for e in results["models"] if "error" in e]
    for entry in results["models"]:
        verdict = entry.get("acceptance", {})
        if verdict.get("converted"):
            lines += ["", f"## {entry['model']} -> cpu-int8 acceptance: "
                      f"{'PASS' if verdict['all_pass'] else 'FAIL'}", ""]
            lines += [f"- {'pass' if ok else 'FAIL'}: {name}" for name, ok in verdict["checks"].items()]
            hub_int8 = next(r for r in entry["rows"] if r["kind"] == "hub" and r["target"] == "cpu-int8")
            lines += [f"- hub int8 latency / by-hand int8 latency: {hub_int8['latency_vs_by_hand']:.2f}; "
                      f"conversion seconds hub / by hand: {hub_int8['seconds_vs_by_hand']:.2f}"]
        verdict = entry.get("acceptance_tflite_arm", {})
        if verdict.get("converted"):
            arm = next(r for r in entry["rows"] if r["kind"] == "hub" and r["target"] == "tflite-arm")
            lines += ["", f"## {entry['model']} -> tflite-arm acceptance: "
                      f"{'PASS' if verdict['all_pass'] else 'FAIL'}", ""]
            lines += [f"- {'pass' if ok else 'FAIL'}: {name}" for name, ok in verdict["checks"].items()]
            lines += [f"- int8 .tflite {arm['bytes'] / 1e6:.2f} MB vs float .tflite "
                      f"{entry['float_tflite_bytes'] / 1e6:.2f} MB; LiteRT latency "
                      f"{arm['latency_ms']:.3f} ms vs PyTorch eager {entry['source_latency_ms']:.3f} ms"]
        elif "acceptance_tflite_arm" in entry:
            lines += ["", f"## {entry['model']} -> tflite-arm acceptance: FAIL (not converted)"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:200]


def _litert_version(distribution: str) -> str:
    import importlib.metadata

    try:
        return f"{distribution} {importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return distribution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="DigitsNet only (about a minute)")
    args = parser.parse_args()
    import onnxruntime
    import torch
    from hub_litert.interpreter import runtime

    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    builders = [digits_model] if args.quick else [digits_model, efficientnet_model]
    models = []
    for build in builders:
        model = build(WORK)
        try:
            entry = benchmark(model, WORK / model.program_path.stem)
        except Exception as error:  # a broken baseline must not hide the other model's numbers
            traceback.print_exc()
            entry = {"model": model.name, "error": f"{type(error).__name__}: {error}", "rows": []}
            models.append(entry)
            continue
        compare(entry)
        if model.judged:
            entry["acceptance"] = acceptance(entry)
            entry["acceptance_tflite_arm"] = tflite_arm_acceptance(entry)
        models.append(entry)
    results = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", Python "
               f"{platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
               f"LiteRT from {_litert_version(runtime()[1])}",
               "quick": args.quick, "seconds": round(time.perf_counter() - started, 1), "models": models}
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (RESULTS / "results.md").write_text(markdown(results))
    print(markdown(results))
    print(f"total {results['seconds']} s; wrote {RESULTS}/results.json and results.md")


if __name__ == "__main__":
    main()
