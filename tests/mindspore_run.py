"""Run MindIR files with MindSpore through the hub's mindspore backend, many in one process. Run with the
hub-managed mindspore environment's interpreter: `python tests/mindspore_run.py JOB.json`, where the job lists
{"model": .mindir, "samples": feeds saved by hub.worker.save_samples, "outputs": where to save_outputs}."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from hub.worker import load_samples, save_outputs
from hub_mindspore.backend import run_samples

if __name__ == "__main__":
    for item in json.loads(Path(sys.argv[1]).read_text()):
        outputs = run_samples(Path(item["model"]), load_samples(Path(item["samples"])), threads=1)
        save_outputs(Path(item["outputs"]), outputs)
