"""Conformance: ONNX's own backend test models through `hub convert --to tflite` against onnx2tf alone, and
through `hub convert --to onnxruntime-cpu` against ONNX Runtime alone.

The onnx wheel ships about 140 test models with inputs and expected outputs
(onnx/backend/test/data/{simple,pytorch-operator,pytorch-converted}/<name>/model.onnx + test_data_set_0/*.pb).
For each model this benchmark

- hub: runs hub.convert(model, to="tflite") with the test inputs as calibration/verification samples (the
  target's own tolerance, no cache, 3 routes, 120 s per step), then runs the delivered .tflite itself with the
  LiteRT interpreter (inputs moved channels-last and outputs moved back when the final state is "/nhwc") and
  compares with the expected outputs (np.allclose rtol 1e-3, atol 1e-4, by position). When the hub refuses a
  result only for drifting beyond its tolerance, it is run once more with the tolerance relaxed to nothing and
  the delivered model is checked the same way (reported separately, not counted as a hub match);
- onnx2tf alone: what a user does by hand: onnx2tf.convert(input_onnx_file_path=..., output_folder_path=...,
  non_verbose=True) in a subprocess (in a scratch folder holding the sample-image file onnx2tf would otherwise
  download), then runs *_float32.tflite, feeding each input in whichever layout its TFLite shape shows and
  reading each output as-is or moved back from channels-last, whichever matches the expected shape (both are
  tried when both fit: lenient to the baseline).
- with --to onnxruntime-cpu, the hub's delivered .onnx is run with ONNX Runtime, and the baseline is ONNX
  Runtime alone on the test model as it is (an InferenceSession, what a user does by hand).

    .venv/bin/python benchmarks/conformance.py [--to tflite|onnxruntime-cpu]
        [--suite simple|pytorch-operator|pytorch-converted|all]
        [--limit N] [--budget SECONDS] [--only NAME] [--no-baseline] [--fresh]

Results merge into benchmarks/results/conformance.json (conformance-onnxruntime.json for --to onnxruntime-cpu;
keyed by suite/model; --fresh starts over) and the .md beside it is rewritten from all of them after each
model, so an interrupted run keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

SUITES = ("simple", "pytorch-operator", "pytorch-converted")
RTOL, ATOL = 1e-3, 1e-4
STEP_TIMEOUT = 120
BASELINE_TIMEOUT = 300
THREADS = 2
SAMPLE_IMAGES_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"  # what onnx2tf would download
BASELINE_SCRIPT = """
import sys, onnx2tf
onnx2tf.convert(input_onnx_file_path=sys.argv[1], output_folder_path=sys.argv[2], non_verbose=True)
"""


def data_root() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data"


# ---------------------------------------------------------------- reading a test model


def read_test_model(folder: Path) -> dict[str, Any]:
    """The model's graph inputs (initializers excluded), test_data_set_0's inputs keyed by input name and expected
    outputs in order, plus notes on what may make it unusual (skip is set when it cannot be fed at all)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in initializers]
    sets = sorted(p for p in folder.glob("test_data_set_*") if p.is_dir())
    info: dict[str, Any] = {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                                         default=None),
                            "test_sets": len(sets), "notes": [], "skip": None}
    if len(sets) > 1:
        info["notes"].append(f"{len(sets)} test sets: only test_data_set_0 is used")
    non_tensor = [v.name for v in list(graph_inputs) + list(model.graph.output)
                  if v.type.WhichOneof("value") != "tensor_type"]
    if non_tensor:
        info["skip"] = f"sequence/optional/map typed inputs or outputs ({', '.join(non_tensor)})"
        return info
    if not sets:
        info["skip"] = "no test_data_set folder"
        return info

    def tensors(prefix: str) -> list[Any]:
        found = []
        for path in sorted(sets[0].glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1])):
            proto = onnx.TensorProto()
            proto.ParseFromString(path.read_bytes())
            found.append((proto.name, numpy_helper.to_array(proto)))
        return found

    inputs, outputs = tensors("input"), tensors("output")
    if len(inputs) != len(graph_inputs):
        info["skip"] = f"{len(inputs)} input files for {len(graph_inputs)} graph inputs"
        return info
    names = [v.name for v in graph_inputs]
    feed = {}
    for position, (name, array) in enumerate(inputs):
        feed[name if name in names else names[position]] = array
    info["inputs"] = feed
    info["expected"] = [array for _, array in outputs]
    info["input_specs"] = [f"{n}:{'x'.join(str(d) for d in a.shape) or 'scalar'}:{a.dtype}" for n, a in feed.items()]
    kinds = {a.dtype.kind for a in feed.values()}
    if kinds - {"f"}:
        info["notes"].append("non-float inputs: " + ", ".join(sorted(str(a.dtype) for a in feed.values()
                                                                     if a.dtype.kind != "f")))
    if any(a.ndim == 0 or a.shape[0] != 1 for a in feed.values()):
        info["notes"].append("an input's first dimension is not a batch of 1 (the hub feeds batches of one)")
    return info


def calibration_arrays(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The hub's .npz convention: axis 0 is the sample axis and each sample is fed as a batch of one, so an array
    whose first dimension is 1 already is one sample; any other array gets a leading sample axis of 1. Strings
    are stored as unicode (an .npz pickles objects, and the hub reads none)."""
    stored = {name: array.astype(np.str_) if array.dtype.kind == "O" else array for name, array in feed.items()}
    return {name: (array if array.ndim and array.shape[0] == 1 else array[None]) for name, array in stored.items()}


# ---------------------------------------------------------------- comparing


def compare(got: list[np.ndarray], expected: list[np.ndarray], lenient_layout: bool = False) -> tuple[bool, str]:
    """(all outputs close, why not / worst error). lenient_layout: an output may also be channels-last."""
    from hub.verification import from_layout

    if len(got) != len(expected):
        return False, f"{len(got)} outputs, expected {len(expected)}"
    worst = 0.0
    for position, (result, want) in enumerate(zip(got, expected)):
        candidates = [result]
        if lenient_layout:
            candidates.append(from_layout(result, "nhwc"))
        fitting = [c for c in candidates if c.shape == want.shape] or [
            c.reshape(want.shape) for c in candidates if c.size == want.size]
        if not fitting:
            return False, f"output {position}: shape {result.shape}, expected {want.shape}"
        best_error, matched = float("inf"), False
        for candidate in fitting:
            if candidate.dtype.kind in "OUSb" or want.dtype.kind in "OUSb":  # strings and booleans: equal or not
                matched = np.array_equal(candidate, want)
                best_error = 0.0 if matched else float("inf")
                if matched:
                    break
                continue
            a, b = candidate.astype(np.float64), want.astype(np.float64)
            if a.size == 0:
                matched, best_error = True, 0.0
                break
            error = float(np.nanmax(np.abs(a - b))) if np.isfinite(a).all() and np.isfinite(b).all() else (
                0.0 if np.array_equal(a, b, equal_nan=True) else float("inf"))
            best_error = min(best_error, error)
            if np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True):
                matched = True
                break
        if not matched:
            return False, f"output {position}: max abs error {best_error:.4g} (shape {want.shape})"
        worst = max(worst, best_error)
    return True, f"max abs error {worst:.3g}"


def run_tflite(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    from hub_litert.interpreter import run_samples

    return run_samples(path, [feed], THREADS)[0]


def run_onnx(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    from hub_onnxruntime.session import run_samples

    return run_samples(path, [feed], THREADS)[0]


# ---------------------------------------------------------------- the hub


def first_line(text: str, limit: int = 300) -> str:
    line = next((l.strip() for l in str(text).splitlines() if l.strip()), "")
    return line[:limit]


def route_failures(message: str) -> list[str]:
    """The "  route: step: reason" lines of an all-routes-failed message (reasons cut to their first line)."""
    return [line.strip()[:400] for line in message.splitlines() if line.startswith("  ") and ": " in line]


def hub_check(model_path: Path, info: dict[str, Any], work: Path, relaxed: bool) -> dict[str, Any]:
    import hub
    from hub.verification import from_layout, to_layout

    calibration = work / "calibration.npz"
    np.savez(calibration, **calibration_arrays(info["inputs"]))
    out = work / ("hub-out-relaxed" if relaxed else "hub-out")
    row: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        result = hub.convert(str(model_path), to=MODE.target, calibration=str(calibration), output=str(out),
                             use_cache=False, max_routes=3, step_timeout=STEP_TIMEOUT, threads=THREADS,
                             tolerance={"min_cosine": -1.0, "min_top1": 0.0} if relaxed else None)
    except hub.HubError as error:
        row.update(status="failed", seconds=round(time.perf_counter() - started, 1), error=type(error).__name__,
                   reason=first_line(error.message), failures=route_failures(error.message))
        row["where"] = _failed_step(row["failures"]) or type(error).__name__
        return row
    except Exception as error:  # a bug in the hub: say so
        row.update(status="crashed", seconds=round(time.perf_counter() - started, 1), error=type(error).__name__,
                   reason=f"{type(error).__name__}: {first_line(str(error))}", where="hub (unexpected exception)")
        return row
    report = result.report
    state = report.final.state
    layout = "nhwc" if state.split("+")[0].endswith("/nhwc") else "source"
    fidelity = report.final.fidelity
    row.update(seconds=round(time.perf_counter() - started, 1), route=report.route, state=state,
               routes_failed_first=[f"{' -> '.join(f.route)}: {f.step}: {first_line(f.reason, 200)}"
                                    for f in report.alternatives_tried],
               hub_cosine=None if fidelity is None else getattr(fidelity, "cosine", None))
    try:
        feed = {name: to_layout(array, layout) for name, array in info["inputs"].items()}
        # as the hub's own check reads them: an output already in a source output's shape was left unmoved
        source_shapes = {np.shape(e) for e in info["expected"]}
        got = [from_layout(o, layout, source_shapes) for o in MODE.run(result.path, feed)]
        matched, why = compare(got, info["expected"])
    except Exception as error:
        row.update(status="run-error", where=f"running the delivered {result.path.suffix}",
                   reason=f"{type(error).__name__}: {first_line(str(error))}")
        return row
    row.update(status="pass" if matched else "mismatch", reason=why)
    if not matched:
        row["where"] = (f"delivered {result.path.suffix} disagrees with the expected outputs (the hub's own check "
                        "passed)")
    return row


def _failed_step(failures: list[str]) -> str | None:
    if not failures:
        return None
    parts = failures[0].split(": ")
    return parts[1] if len(parts) > 2 else None


# ---------------------------------------------------------------- onnx2tf alone


def onnx2tf_alone_check(model_path: Path, info: dict[str, Any], work: Path) -> dict[str, Any]:
    from hub.verification import to_layout
    from hub_litert.interpreter import open_interpreter

    folder = work / "onnx2tf"
    folder.mkdir()
    copy = folder / "model.onnx"
    shutil.copy(model_path, copy)  # onnx2tf rewrites its input in place
    np.save(folder / SAMPLE_IMAGES_FILE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    started = time.perf_counter()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}  # no downloads
    try:
        done = subprocess.run([sys.executable, "-c", BASELINE_SCRIPT, str(copy), str(folder / "out")], cwd=folder,
                              env=env, capture_output=True, text=True, timeout=BASELINE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "where": "onnx2tf", "reason": f"timed out after {BASELINE_TIMEOUT} s",
                "seconds": BASELINE_TIMEOUT}
    seconds = round(time.perf_counter() - started, 1)
    produced = sorted((folder / "out").glob("*_float32.tflite"))
    if not produced:
        log = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        errors = [l for l in log if "Error" in l or "ERROR" in l] or log[-3:]
        return {"status": "failed", "where": "onnx2tf", "seconds": seconds,
                "reason": f"exit {done.returncode}: " + " | ".join(e.strip()[:200] for e in errors[-3:])}
    try:
        interpreter = open_interpreter(produced[0], THREADS, delegates=False)
        feed = {}
        details = interpreter.get_input_details()
        names = list(info["inputs"])
        for position, (name, array) in enumerate(info["inputs"].items()):
            detail = _tflite_input(details, name, position, len(names))
            want = tuple(detail["shape_signature"]) if detail is not None else array.shape
            feed[name] = to_layout(array, "nhwc") if (not _fits(array.shape, want)
                                                      and _fits(to_layout(array, "nhwc").shape, want)) else array
        got = run_tflite(produced[0], feed)
        matched, why = compare(got, info["expected"], lenient_layout=True)
    except Exception as error:
        return {"status": "run-error", "where": "running onnx2tf's .tflite", "seconds": seconds,
                "reason": f"{type(error).__name__}: {first_line(str(error))}"}
    return {"status": "pass" if matched else "mismatch", "seconds": seconds, "reason": why,
            **({} if matched else {"where": "onnx2tf's .tflite disagrees with the expected outputs"})}


def onnxruntime_alone_check(model_path: Path, info: dict[str, Any], work: Path) -> dict[str, Any]:
    """What a user does by hand: the test model as it is, in an ONNX Runtime session."""
    import onnxruntime

    started = time.perf_counter()
    try:
        session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        got = session.run(None, {name: array for name, array in info["inputs"].items()})
        matched, why = compare([np.asarray(o) for o in got], info["expected"])
    except Exception as error:
        return {"status": "failed", "where": "onnxruntime", "seconds": round(time.perf_counter() - started, 1),
                "reason": f"{type(error).__name__}: {first_line(str(error))}"}
    return {"status": "pass" if matched else "mismatch", "seconds": round(time.perf_counter() - started, 1),
            "reason": why, **({} if matched else {"where": "ONNX Runtime's outputs disagree with the expected"})}


def _tflite_input(details: list[dict], name: str, position: int, count: int) -> dict | None:
    for detail in details:
        tensor = detail["name"].split(":")[0]
        if tensor in (name, name.replace(":", "__"), f"serving_default_{name}"):
            return detail
    return details[position] if len(details) == count else None


def _fits(shape: tuple[int, ...], want: tuple[int, ...]) -> bool:
    return len(shape) == len(want) and all(w < 0 or w == s for s, w in zip(shape, want))


# ---------------------------------------------------------------- the whole run


def summarize(results: dict[str, dict]) -> dict[str, Any]:
    rows = [r for r in results.values() if not r.get("skipped")]
    hub_rows = [r for r in rows if "hub" in r]
    base_rows = [r for r in rows if MODE.baseline in r]
    count = lambda rs, key: sum(1 for r in rs if r[key]["status"] == "pass")  # noqa: E731
    by_suite = {}
    for suite in SUITES:
        suite_rows = [r for r in hub_rows if r["suite"] == suite]
        if suite_rows:
            by_suite[suite] = {"models": len(suite_rows), "hub_matched": count(suite_rows, "hub"),
                               "baseline_matched": count([r for r in suite_rows if MODE.baseline in r], MODE.baseline),
                               "baseline_models": sum(1 for r in suite_rows if MODE.baseline in r)}
    both = [r for r in hub_rows if MODE.baseline in r]
    return {
        "models": len(hub_rows), "skipped": sum(1 for r in results.values() if r.get("skipped")),
        "hub_matched": count(hub_rows, "hub"),
        "baseline": MODE.label, "baseline_models": len(base_rows), "baseline_matched": count(base_rows, MODE.baseline),
        "hub_only": sorted(k for k, r in results.items() if r in both and r["hub"]["status"] == "pass"
                           and r[MODE.baseline]["status"] != "pass"),
        "baseline_only": sorted(k for k, r in results.items() if r in both and r[MODE.baseline]["status"] == "pass"
                               and r["hub"]["status"] != "pass"),
        "relaxed_would_match": sorted(k for k, r in results.items() if r.get("hub_relaxed", {}).get("status")
                                      == "pass"),
        "by_suite": by_suite,
    }


def render(results: dict[str, dict], summary: dict[str, Any], meta: dict[str, Any]) -> str:
    label = MODE.label
    lines = [f"# Conformance: ONNX backend test models -> {MODE.target}", "",
             f"{meta['machine']}; onnx {meta['versions'].get('onnx')}, onnx2tf {meta['versions'].get('onnx2tf')}, "
             f"onnxruntime {meta['versions'].get('onnxruntime')}, "
             f"tensorflow {meta['versions'].get('tensorflow')}. `benchmarks/conformance.py`: `hub.convert(to="
             f"\"{MODE.target}\")` (target tolerance, {STEP_TIMEOUT} s per step, 3 routes, no cache) vs {label} "
             f"by hand; each delivered model run on test_data_set_0 and compared with the expected "
             f"outputs (allclose rtol {RTOL}, atol {ATOL}).", "",
             f"**hub matched {summary['hub_matched']}/{summary['models']}**, "
             f"{label} matched {summary['baseline_matched']}/{summary['baseline_models']} "
             f"(skipped before converting: {summary['skipped']}).", "",
             f"| suite | models | hub matched | {label} matched |", "|---|---|---|---|"]
    for suite, s in summary["by_suite"].items():
        lines.append(f"| {suite} | {s['models']} | {s['hub_matched']} | "
                     f"{s['baseline_matched']}/{s['baseline_models']} |")
    lines += ["", f"Hub matched, {label} did not: {', '.join(summary['hub_only']) or 'none'}.",
              f"{label} matched, hub did not: {', '.join(summary['baseline_only']) or 'none'}.",
              f"Refused by the hub's tolerance but matching the expected outputs when relaxed: "
              f"{', '.join(summary['relaxed_would_match']) or 'none'}.", "",
              "## Hub failures", "", f"| model | status | where | why | {label} |", "|---|---|---|---|---|"]
    for key, r in sorted(results.items()):
        if r.get("skipped") or r["hub"]["status"] == "pass":
            continue
        h = r["hub"]
        why = h.get("reason", "")
        if h.get("failures"):
            why = "; ".join(h["failures"])
        if r.get("hub_relaxed"):
            why += f" [relaxed: {r['hub_relaxed']['status']}, {r['hub_relaxed'].get('reason', '')}]"
        base = r.get(MODE.baseline, {}).get("status", "-")
        lines.append(f"| {key} | {h['status']} | {_cell(h.get('where', ''))} | {_cell(why, 500)} | {base} |")
    lines += ["", f"## {label} failures", "", "| model | status | why |", "|---|---|---|"]
    for key, r in sorted(results.items()):
        base = r.get(MODE.baseline)
        if r.get("skipped") or base is None or base["status"] == "pass":
            continue
        lines.append(f"| {key} | {base['status']} | {_cell(base.get('reason', ''), 300)} |")
    skipped = [(k, r) for k, r in sorted(results.items()) if r.get("skipped")]
    if skipped:
        lines += ["", "## Skipped", "", "| model | why |", "|---|---|"]
        lines += [f"| {k} | {_cell(r['skipped'])} |" for k, r in skipped]
    lines += ["", "## Every model", "", f"| model | inputs | hub | route | hub s | {label} | {label} s |",
              "|---|---|---|---|---|---|---|"]
    for key, r in sorted(results.items()):
        if r.get("skipped"):
            continue
        h, b = r["hub"], r.get(MODE.baseline, {})
        lines.append(f"| {key} | {_cell(', '.join(r.get('input_specs', [])), 120)} | {h['status']} | "
                     f"{' -> '.join(h.get('route', [])) or '-'} | {h.get('seconds', '')} | {b.get('status', '-')} | "
                     f"{b.get('seconds', '')} |")
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    found = {}
    for name in ("onnx", "onnx2tf", "tensorflow", "onnxruntime", "ai-edge-litert"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


@dataclass(frozen=True)
class Mode:
    """What the hub converts to, what a user would run by hand instead, and where the results go."""

    target: str
    baseline: str  # the key of the baseline's result in a row
    label: str
    results: str
    run: Callable[[Path, dict[str, np.ndarray]], list[np.ndarray]]
    baseline_check: Callable[[Path, dict[str, Any], Path], dict[str, Any]]


MODES = {
    "tflite": Mode("tflite", "onnx2tf", "onnx2tf alone", "conformance", run_tflite, onnx2tf_alone_check),
    "onnxruntime-cpu": Mode("onnxruntime-cpu", "onnxruntime", "ONNX Runtime alone", "conformance-onnxruntime",
                            run_onnx, onnxruntime_alone_check),
}
MODE = MODES["tflite"]


def main() -> None:
    global MODE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--to", choices=tuple(MODES), default="tflite", help="the hub's target")
    parser.add_argument("--suite", choices=(*SUITES, "all"), default="all")
    parser.add_argument("--limit", type=int, default=None, help="at most N models per suite")
    parser.add_argument("--only", action="append", default=[], help="only models with this name (repeatable)")
    parser.add_argument("--budget", type=float, default=None, help="start no new model after this many seconds")
    parser.add_argument("--no-baseline", action="store_true", help="skip the library alone")
    parser.add_argument("--no-relaxed", action="store_true", help="no relaxed-tolerance retry on drift")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results in conformance.json")
    args = parser.parse_args()
    MODE = MODES[args.to]

    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{MODE.results}.json"
    previous = json.loads(json_path.read_text()) if json_path.exists() and not args.fresh else {}
    results: dict[str, dict] = previous.get("models", {})
    meta = {"machine": f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores",
            "versions": versions()}
    suites = SUITES if args.suite == "all" else (args.suite,)
    root = data_root()
    begun = time.perf_counter()
    for suite in suites:
        folders = sorted(p for p in (root / suite).iterdir() if (p / "model.onnx").exists())
        if args.only:
            folders = [p for p in folders if p.name in args.only]
        for folder in folders[:args.limit]:
            if args.budget is not None and time.perf_counter() - begun > args.budget:
                print(f"budget of {args.budget:.0f} s spent: stopping", flush=True)
                break
            key = f"{suite}/{folder.name}"
            row: dict[str, Any] = {"suite": suite, "model": folder.name}
            try:
                info = read_test_model(folder)
            except Exception as error:
                info = {"skip": f"cannot read the test data: {type(error).__name__}: {first_line(str(error))}",
                        "notes": []}
            row["notes"] = info.get("notes", [])
            if info.get("skip"):
                row["skipped"] = info["skip"]
            else:
                row.update(opset=info["opset"], input_specs=info["input_specs"])
                with tempfile.TemporaryDirectory(prefix="hub-conformance-") as scratch:
                    work = Path(scratch)
                    row["hub"] = hub_check(folder / "model.onnx", info, work, relaxed=False)
                    if (not args.no_relaxed and row["hub"]["status"] == "failed"
                            and row["hub"].get("error") == "FidelityError"):
                        row["hub_relaxed"] = hub_check(folder / "model.onnx", info, work, relaxed=True)
                    if not args.no_baseline:
                        row[MODE.baseline] = MODE.baseline_check(folder / "model.onnx", info, work)
            if args.no_baseline and MODE.baseline in results.get(key, {}):
                row[MODE.baseline] = results[key][MODE.baseline]  # keep the baseline measured earlier
            results[key] = row
            hub_status = row.get("hub", {}).get("status", "skipped")
            why = "" if hub_status == "pass" else ": " + str(row.get("hub", {}).get("reason", row.get("skipped")))[:160]
            print(f"{key}: hub {hub_status} ({row.get('hub', {}).get('seconds', '-')} s){why}"
                  f"; {MODE.label} {row.get(MODE.baseline, {}).get('status', '-')}", flush=True)
            summary = summarize(results)
            json_path.write_text(json.dumps({"meta": meta, "summary": summary, "models": results}, indent=1,
                                            default=str) + "\n")
            (RESULTS / f"{MODE.results}.md").write_text(render(results, summary, meta))
    summary = summarize(results)
    print(json.dumps({k: v for k, v in summary.items() if k != "by_suite"}), flush=True)


if __name__ == "__main__":
    main()
