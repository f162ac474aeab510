"""Benchmark hub.convert against the source model and against doing cpu-int8 by hand.

For each model (DigitsNet trained on scikit-learn's digits; EfficientNet-Lite0 with ImageNet weights) and each
usable target, converts the torch.export .pt2 with hub.convert and measures, in this one process: conversion
seconds, sizes, batch-1 latency on 2 threads (the source in PyTorch eager fp32, results in ONNX Runtime) and
fidelity on held-out samples that calibration never saw. The cpu-int8 baseline is what a user writes by
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
TARGETS = ("cpu-int8", "onnxruntime-cpu", "onnxruntime-fp16", "cpu-int8-dynamic")
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
                       heldout, work / "efficientnet_lite0.calib.npz", latency_repeats=60,
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


def measure(row: Row, model: Model, path: Path, reference: np.ndarray) -> None:
    session = ort_session(path)
    row.bytes = file_bytes(path)
    row.latency_ms = ort_latency_ms(session, model.heldout[:1], model.latency_repeats)
    row.fidelity = fidelity(reference, ort_outputs(session, model.heldout))


# ---------------------------------------------------------------- converting


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
    started = time.perf_counter()
    try:
        result = hub.convert(model.program_path, to=target, calibration=model.calibration_path, output=output,
                             use_cache=False, threads=THREADS)
    except hub.HubError as error:
        row.error = f"{type(error).__name__}: {error}"
        row.detail = getattr(error, "detail", None)
        return row
    row.seconds = time.perf_counter() - started
    row.route = list(result.report.route)
    final = result.report.final
    row.notes = {"hub_verification": final.fidelity.to_json() if final and final.fidelity else None,
                 "hub_latency_ms": final.latency_ms if final else None,
                 "steps": [{"name": s.name, "seconds": round(s.seconds, 2), "notes": s.notes}
                           for s in result.report.steps]}
    measure(row, model, result.path, reference)
    return row


def export_by_hand(model: Model, output: Path) -> None:
    """What a user writes: load the ExportedProgram, export it with the dynamo exporter to one .onnx file."""
    import torch

    program = torch.export.load(model.program_path)
    torch.onnx.export(program, f=str(output), dynamo=True, external_data=False, input_names=[INPUT_NAME],
                      verbose=False)


def quantize_by_hand(source: Path, output: Path, calibration: np.ndarray, **overrides: Any) -> None:
    """quantize_static as ONNX Runtime's docs show it, with the settings the hub's cpu-int8 uses."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{INPUT_NAME: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    settings = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    settings.update(overrides)
    quantize_static(str(source), str(output), Reader(), **settings)


def by_hand_rows(model: Model, work: Path, reference: np.ndarray) -> tuple[list[Row], Path]:
    """fp32 ONNX (dynamo export) and cpu-int8 by hand; also the ORT docs' recommended quant_pre_process
    variant. Returns the rows and the fp32 ONNX file every size ratio is measured against."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = work / "by-hand"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    rows = []

    export = Row(model.name, "fp32 ONNX", "by hand", route=["torch.onnx.export(dynamo=True)"])
    started = time.perf_counter()
    export_by_hand(model, fp32)
    export.seconds = time.perf_counter() - started
    measure(export, model, fp32, reference)
    rows.append(export)

    hand = Row(model.name, "cpu-int8", "by hand", route=["torch.onnx.export(dynamo=True)", "quantize_static"])
    started = time.perf_counter()
    export_by_hand(model, folder / "model.again.onnx")
    quantize_by_hand(folder / "model.again.onnx", int8, model.calibration)
    hand.seconds = time.perf_counter() - started
    measure(hand, model, int8, reference)
    rows.append(hand)

    pre = Row(model.name, "cpu-int8", "by hand + pre-process",
              route=["torch.onnx.export(dynamo=True)", "quant_pre_process", "quantize_static"])
    preprocessed, pre_int8 = folder / "model.pre.onnx", folder / "model.pre.int8.onnx"
    started = time.perf_counter()
    quant_pre_process(str(fp32), str(preprocessed))
    quantize_by_hand(preprocessed, pre_int8, model.calibration)
    pre.seconds = export.seconds + time.perf_counter() - started
    measure(pre, model, pre_int8, reference)
    rows.append(pre)
    return rows, fp32


# ---------------------------------------------------------------- the run


def benchmark(model: Model, work: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(THREADS)
    print(f"== {model.name}: {len(model.calibration)} calibration, {len(model.heldout)} held-out samples",
          flush=True)
    reference = torch_outputs(model.module, model.heldout)
    source_ms = torch_latency_ms(model.module, model.heldout[:1], model.latency_repeats)
    rows, fp32 = by_hand_rows(model, work, reference)
    for row in rows:
        print(f"  by hand {row.target} ({row.kind}): {row.seconds:.1f} s", flush=True)
    for target in TARGETS:
        row = hub_row(model, target, work, reference)
        rows.append(row)
        print(f"  hub {target}: " + (row.error or f"{row.seconds:.1f} s via {' > '.join(row.route)}"), flush=True)
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
    for row in entry["rows"]:
        if row["bytes"] is None:
            continue
        row["size_vs_fp32_onnx"] = row["bytes"] / entry["fp32_onnx_bytes"]
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


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Benchmark: hub.convert vs by hand",
        "",
        f"{results['machine']}; {THREADS} threads; batch 1; latency = median; fidelity on held-out samples "
        "against the source in PyTorch eager fp32 (cosine of logits, top-1 agreement, top-1 agreement where "
        "the source's softmax > 0.5, source top-1 within the result's top 5).",
        "",
        "| model | target | route | conversion s | vs by hand | size vs fp32 ONNX | latency ms (result / eager "
        "= ratio) | cosine | top-1 | confident top-1 (n) | top-5 |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for entry in results["models"]:
        for row in entry["rows"]:
            target = row["target"] if row["kind"] == "hub" else f"{row['target']} ({row['kind']})"
            if row["error"]:
                lines.append(f"| {entry['model']} | {target} | failed: {_cell(row['error'])} | | | | | | | | |")
                continue
            f = row["fidelity"]
            confident = "n/a" if f["confident_top1"] is None else f"{f['confident_top1']:.1%}"
            overhead = f"{row['seconds_vs_by_hand']:.2f}x" if "seconds_vs_by_hand" in row else ""
            lines.append(
                f"| {entry['model']} | {target} | {_cell(' > '.join(row['route']))} | {row['seconds']:.1f} | "
                f"{overhead} | {row['size_vs_fp32_onnx']:.3f} | {row['latency_ms']:.3f} / "
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
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="DigitsNet only (about a minute)")
    args = parser.parse_args()
    import onnxruntime
    import torch

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
        entry["acceptance"] = acceptance(entry)
        models.append(entry)
    results = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", Python "
               f"{platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}",
               "quick": args.quick, "seconds": round(time.perf_counter() - started, 1), "models": models}
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (RESULTS / "results.md").write_text(markdown(results))
    print(markdown(results))
    print(f"total {results['seconds']} s; wrote {RESULTS}/results.json and results.md")


if __name__ == "__main__":
    main()
