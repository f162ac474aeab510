"""The zoo benchmark: real pretrained models from PyPI wheels, each converted with `hub convert` to every target
that makes sense for it, the result run on held-out inputs and scored with the model's task metric against the
source run in its own framework.

    python benchmarks/zoo.py [--models GLOB,...] [--targets T,...] [--timeout 900] [--reuse]

Models live in benchmarks/zoo_models (one module per source family). Each pair is one `hub convert` process, so a
crash or a hang costs one pair. Writes benchmarks/results/zoo.{json,md} after every pair; --reuse keeps the pairs
already measured and runs the rest; pairs not run now keep their earlier results.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from zoo_models import Data, Feed, Prepared, ZooModel, all_models  # noqa: E402
from zoo_models.runtime import renamed, run_model  # noqa: E402

WORK = HERE / "work" / "zoo"
RESULTS = HERE / "results"
NO_ROUTE_EXIT = 4


def save_feeds(path: Path, feeds: list[Feed]) -> Path:
    """Feeds as a hub calibration file: one array per input, batch-1 samples concatenated along axis 0 (inputs
    with no batch axis of one are stacked)."""
    arrays = {}
    for name in feeds[0]:
        values = [np.asarray(feed[name]) for feed in feeds]
        batched = all(value.ndim and value.shape[0] == 1 for value in values)
        arrays[name] = np.concatenate(values) if batched else np.stack(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def hub_command(prepared: Prepared, target: str, calibration: Path, out: Path, report: Path,
                timeout: float) -> list[str]:
    return [sys.executable, "-m", "hub.cli", "convert", str(prepared.source), "--to", target,
            "--calibration", str(calibration), "-o", str(out), "--report", str(report), "--quiet",
            "--timeout", str(timeout), *prepared.flags]


def run_pair(model: ZooModel, prepared: Prepared, data: Data, reference: list[dict], target: str,
             work: Path, timeout: float) -> dict[str, Any]:
    out, report_path = work / target, work / f"{target}.report.json"
    shutil.rmtree(out, ignore_errors=True)
    report_path.unlink(missing_ok=True)
    command = hub_command(prepared, target, work / "calibration.npz", out, report_path, timeout)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout * 3, env=_env())
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"hub convert ran past {timeout * 3:.0f} s", "exit": None,
                "seconds": round(time.perf_counter() - started, 1)}
    row: dict[str, Any] = {"seconds": round(time.perf_counter() - started, 1), "exit": done.returncode,
                           "stderr_lines": len(done.stderr.strip().splitlines())}
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        row.update(status="unreachable" if done.returncode == NO_ROUTE_EXIT else "failed",
                   reason=" / ".join(line.strip() for line in lines) or f"exit {done.returncode}")
        return row
    return row | measure_result(model, report, data, reference, target)


def measure_result(model: ZooModel, report: dict, data: Data, reference: list[dict],
                   target: str) -> dict[str, Any]:
    final = report["final"]
    path = Path(final["path"])
    layout = final["state"].rsplit("/", 1)[1] if "/" in final["state"] else "source"
    fidelity = final.get("fidelity") or {}
    pairing = {output["matched"]: output["name"] for output in fidelity.get("outputs", [])}
    source_shapes = frozenset(tuple(output["shape"]) for output in fidelity.get("outputs", []))
    result, latency = run_model(path, data.heldout, layout, source_shapes)
    score = model.score(reference, renamed(result, pairing), target, data.heldout)
    return {"status": "ok" if score.passed else "task metric below bar", "route": " > ".join(report["route"]),
            "state": final["state"], "bytes": final["bytes"], "latency_ms": round(latency[0], 3),
            "metric": score.metric, "value": score.value, "passed": score.passed, "detail": score.detail,
            "hub_cosine": fidelity.get("cosine"), "ladder": _ladder_note(report)}


def _ladder_note(report: dict) -> str:
    """The ladder rung each step passed at ("ort-quantize-static: {"widen_sensitive": 2}"), if any."""
    rungs = [f"{step['name']}: {json.dumps(step['notes']['rung'])}" for step in report.get("steps", [])
             if "rung" in step.get("notes", {})]
    return "; ".join(rungs)[:200]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # benchmarks/ too: a state-dict model names its factory as zoo_models.FAMILY:FUNCTION
    paths = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "tests" / "plugin_example"), str(HERE)]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def source_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def run_model_pairs(model: ZooModel, targets: list[str], timeout: float, rows: dict[str, dict]) -> None:
    work = WORK / model.name
    try:
        prepared = model.prepare(work)
        data = model.data(work)
        save_feeds(work / "calibration.npz", data.calibration)
        reference = model.reference(prepared, data.heldout)
    except Exception as error:  # the benchmark's own adapter failed: recorded, not a hub result
        reason = f"benchmark could not prepare the model: {type(error).__name__}: {error}"
        traceback.print_exc()
        for target in targets:
            rows[f"{model.name}|{target}"] = {"status": "not run", "reason": reason}
        return
    for target in targets:
        print(f"[zoo] {model.name} -> {target}", file=sys.stderr, flush=True)
        try:
            row = run_pair(model, prepared, data, reference, target, work, timeout)
        except Exception as error:
            traceback.print_exc()
            row = {"status": "not run", "reason": f"benchmark failed measuring: {type(error).__name__}: {error}"}
        row["source_bytes"] = source_bytes(prepared.source)
        rows[f"{model.name}|{target}"] = row
        print(f"[zoo]   {row['status']}: {row.get('reason') or row.get('value')}", file=sys.stderr, flush=True)
        write(rows)


def write(rows: dict[str, dict]) -> None:
    from zoo_report import markdown

    RESULTS.mkdir(exist_ok=True)
    models = {model.name: model for model in all_models()}
    meta = {"python": platform.python_version(), "machine": platform.machine(), "versions": _versions()}
    (RESULTS / "zoo.json").write_text(json.dumps({"meta": meta, "pairs": rows}, indent=1, default=str) + "\n")
    (RESULTS / "zoo.md").write_text(markdown(rows, models, meta))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "tensorflow", "onnx", "onnxruntime", "onnx2tf", "ai-edge-litert", "litert-torch",
                 "nncf", "tf2onnx"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="*", help="comma-separated name globs")
    parser.add_argument("--targets", help="comma-separated targets (default: each model's own)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one step may run")
    parser.add_argument("--reuse", action="store_true", help="skip pairs already in results/zoo.json")
    args = parser.parse_args()
    rows: dict[str, dict] = {}  # earlier pairs are kept; the pairs run now replace theirs
    if (RESULTS / "zoo.json").exists():
        rows = json.loads((RESULTS / "zoo.json").read_text())["pairs"]
    globs = args.models.split(",")
    for model in all_models():
        if not any(fnmatch.fnmatch(model.name, pattern) for pattern in globs):
            continue
        targets = args.targets.split(",") if args.targets else list(model.targets)
        todo = [t for t in targets if not (args.reuse and f"{model.name}|{t}" in rows)]
        if todo:
            run_model_pairs(model, todo, args.timeout, rows)
    write(rows)


if __name__ == "__main__":
    main()
