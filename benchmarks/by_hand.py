"""cpu-int8 by hand: the script a user writes from the PyTorch and ONNX Runtime docs, run as its own process
so that its time counts interpreter start and imports, like hub.convert's workers do.

    python benchmarks/by_hand.py MODEL.pt2 CALIB.npz OUT_DIR [--pre-process] [--option KEY=VALUE]...

writes OUT_DIR/model.onnx (fp32, dynamo exporter) and OUT_DIR/model.int8.onnx (quantize_static: QDQ, per-channel
int8 weights, uint8 activations, MinMax: the hub's cpu-int8 settings), and prints a JSON line of phase seconds.
--option passes extra quantize_static keywords (e.g. calibrate_method=Percentile, extra.ActivationSymmetric=True).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

started = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,  # noqa: E402
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402


class NpzReader(CalibrationDataReader):
    """Feeds each calibration sample as a batch of one, keyed by the model's input name."""

    def __init__(self, path: Path, input_name: str) -> None:
        with np.load(path) as archive:
            samples = archive[archive.files[0]]
        self.feeds = iter([{input_name: samples[i:i + 1]} for i in range(len(samples))])

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def parse_option(text: str) -> tuple[str, object]:
    key, value = text.split("=", 1)
    if key == "calibrate_method":
        return key, getattr(CalibrationMethod, value)
    if key in ("activation_type", "weight_type"):
        return key, getattr(QuantType, value)
    if key == "nodes_to_exclude":
        return key, value.split(",")
    if value in ("True", "False"):
        return key, value == "True"
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("program")
    parser.add_argument("calibration")
    parser.add_argument("out")
    parser.add_argument("--pre-process", action="store_true", help="run quant_pre_process first (ORT docs)")
    parser.add_argument("--option", action="append", default=[], help="extra quantize_static KEY=VALUE")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = {"imports": time.perf_counter() - started}

    mark = time.perf_counter()
    program = torch.export.load(args.program)
    fp32 = out / "model.onnx"
    torch.onnx.export(program, f=str(fp32), dynamo=True, external_data=False, input_names=["image"])
    seconds["export"] = time.perf_counter() - mark

    source = fp32
    if args.pre_process:
        mark = time.perf_counter()
        source = out / "model.pre.onnx"
        quant_pre_process(str(fp32), str(source))
        seconds["pre_process"] = time.perf_counter() - mark

    settings = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    extra = {}
    for text in args.option:
        key, value = parse_option(text)
        if key.startswith("extra."):
            extra[key[len("extra."):]] = value
        else:
            settings[key] = value
    if extra:
        settings["extra_options"] = extra
    mark = time.perf_counter()
    quantize_static(str(source), str(out / "model.int8.onnx"), NpzReader(Path(args.calibration), "image"),
                    **settings)
    seconds["quantize"] = time.perf_counter() - mark
    print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main()
