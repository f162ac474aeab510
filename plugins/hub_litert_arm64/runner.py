"""Runs a .tflite in the emulated aarch64 Python: started by hub_litert_arm64.emulated, never imported by the hub.

It can import neither the hub nor the plugin (the aarch64 Python has only ai-edge-litert and its requirements), so
the feeding module, hub_litert/feeding.py, and the hub's kit (its latency timer) are loaded from the paths given:
the same files, hence the same quantize and dequantize arithmetic, input matching and timing, as the x86 litert
backend.

    runner.py FEEDING_PY KIT_PY MODEL THREADS SAMPLES_NPZ OUTPUTS_NPZ [REPEATS]

SAMPLES_NPZ holds "{sample}/{input name}" arrays. Without REPEATS every sample is run and OUTPUTS_NPZ gets
"{sample}/{output index}" arrays; with REPEATS the first sample is timed and OUTPUTS_NPZ gets "median_ms".
"""
import importlib.util
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter

INPUT_MISMATCH_EXIT = 3
INPUT_MISMATCH_PREFIX = "input mismatch: "


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_samples(path):
    samples = {}
    with np.load(path) as archive:
        for key in archive.files:
            index, _, name = key.partition("/")
            samples.setdefault(int(index), {})[name] = archive[key]
    return [samples[index] for index in sorted(samples)]


def main(feeding, kit, model_path, threads, samples_path, outputs_path, repeats=None):
    samples = read_samples(samples_path)
    # As hub_litert.interpreter.open_interpreter with its defaults: XNNPACK, the caller's thread count.
    interpreter = Interpreter(model_path=model_path, num_threads=max(1, int(threads)))
    interpreter.allocate_tensors()
    infer = feeding.bind(interpreter, samples[0] if samples else {})
    if repeats is None:
        outputs = {f"{i}/{k}": array for i, sample in enumerate(samples) for k, array in enumerate(infer(sample))}
        np.savez(outputs_path, **outputs)
        return
    # As hub_litert.interpreter.median_latency_ms: warm-up runs not counted, feeding included in each timing.
    np.savez(outputs_path, median_ms=np.float64(kit.median_latency_ms(lambda: infer(samples[0]), int(repeats))))


if __name__ == "__main__":
    feeding = load_module("feeding", sys.argv[1])
    try:
        main(feeding, load_module("kit", sys.argv[2]), *sys.argv[3:])
    except feeding.InputMismatch as error:
        # emulated.py turns this exit status into the UsageError the x86 backend raises
        print(f"{INPUT_MISMATCH_PREFIX}{error}", file=sys.stderr)
        sys.exit(INPUT_MISMATCH_EXIT)
