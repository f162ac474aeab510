"""MindIR routes, measured: EfficientNet-Lite0 (ImageNet weights) ONNX -> MindIR, and three networks MindSpore
exported itself (tests/mindspore_networks.py) MindIR -> ONNX Runtime fp32, cpu-int8 and tflite-arm.

    python benchmarks/mindir.py

Needs the hub-managed mindspore environment (`hub env create mindspore`). For each conversion: seconds, size,
the fidelity the hub verified, and batch-1 latency of the source and the result on their own backends (2
threads; MindSpore in graph mode). Nothing on PyPI converts ONNX -> MindIR for Python 3.11, so there is no
by-hand baseline for that direction; for MindIR -> ONNX the baseline would be MindSpore's own ONNX export,
which needs the network's Python code (not the .mindir) and writes asymmetric padding in the wrong order.
Writes benchmarks/results/mindir.{json,md}.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = ("onnxruntime-cpu", "cpu-int8", "tflite-arm")


def convert(source: Path, target: str, out: Path, calibration: Path | None = None) -> dict[str, Any]:
    import hub

    started = time.perf_counter()
    try:
        result = hub.convert(source, to=target, calibration=calibration, output=out, threads=2)
    except hub.HubError as error:
        return {"source": source.name, "target": target, "error": error.message}
    report = result.report
    fidelity = report.final.fidelity
    return {"source": source.name, "target": target, "route": report.route,
            "seconds": round(time.perf_counter() - started, 1), "source_bytes": source.stat().st_size,
            "bytes": report.final.bytes, "cosine": round(fidelity.cosine, 6), "max_abs": float(fidelity.max_abs),
            "latency_ms": report.final.latency_ms, "source_latency_ms": report.final.source_latency_ms,
            "backend": report.final.backend}


def efficientnet_rows(work: Path) -> list[dict[str, Any]]:
    import torch

    import pretrained

    model = pretrained.efficientnet_lite0()
    calibration, _ = pretrained.calibration_and_heldout(calibration_count=16, heldout_count=1)
    program = work / "efficientnet_lite0.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(calibration[:1]),)), program)
    np.savez(work / "calib.npz", calibration)
    onnx_row = convert(program, "onnxruntime-cpu", work / "onnx", work / "calib.npz")
    as_onnx = next((work / "onnx").glob("*.onnx"))
    return [onnx_row, convert(as_onnx, "mindir", work / "mindir", work / "calib.npz")]


def mindspore_exports(work: Path) -> Path:
    from hub.environments import interpreter

    folder = work / "exported"
    subprocess.run([str(interpreter("mindspore")), str(ROOT / "tests" / "mindspore_networks.py"), str(folder)],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ""})
    return folder


def write(rows: list[dict[str, Any]], seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mindir.json").write_text(json.dumps({"rows": rows, "seconds": round(seconds, 1)}, indent=2))
    lines = ["# MindIR routes", "",
             f"{platform.machine()}, Python {platform.python_version()}, 2 threads. `benchmarks/mindir.py`: "
             "`hub.convert` with verification on; fidelity is what the hub verified against the source "
             "(MindSpore runs the MindIR side). Latency: batch 1, median, each model on its own backend.", "",
             "| source | target | route | s | source KB | result KB | cosine | max-abs | source ms | result ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['source']} | {row['target']} | failed: {row['error']} |||||||| ")
            continue
        lines.append(
            f"| {row['source']} | {row['target']} | {' -> '.join(row['route'])} | {row['seconds']} | "
            f"{row['source_bytes'] / 1e3:.1f} | {row['bytes'] / 1e3:.1f} | {row['cosine']:.6f} | "
            f"{row['max_abs']:.2e} | {_ms(row['source_latency_ms'])} | {_ms(row['latency_ms'])} ({row['backend']}) |")
    (RESULTS / "mindir.md").write_text("\n".join(lines) + "\n")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hub-mindir-bench-") as scratch:
        work = Path(scratch)
        rows = efficientnet_rows(work)
        exported = mindspore_exports(work)
        for network in ("cnn", "mlp", "residual"):
            for target in TARGETS:
                rows.append(convert(exported / f"{network}.mindir", target, work / f"{network}-{target}"))
                print(rows[-1], flush=True)
    write(rows, time.perf_counter() - started)
    print((RESULTS / "mindir.md").read_text())


if __name__ == "__main__":
    main()
