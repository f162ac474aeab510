"""The LiteRT interpreter on an emulated aarch64 CPU: proves a .tflite (tflite-arm) runs on ARM and gives the same
numbers there. Declarations only.

The platform is an aarch64 Debian Python userland with the aarch64 ai-edge-litert wheel, run by qemu's user-mode
emulator (qemu-aarch64-static -L ROOT), set up once by hub_litert_arm64.setup:prepare into the hub's cache
(downloads from the host's Debian mirror and the package index; no system install, no root). Running lives in
hub_litert_arm64.emulated; samples are fed and outputs read by hub_litert.feeding, the very file the x86 litert
backend uses, so full-integer models give byte-identical outputs on both.
"""
from __future__ import annotations

from hub.declarations import Backend
from hub.hookspecs import hookimpl


@hookimpl
def hub_backends() -> list[Backend]:
    return [
        Backend(
            name="litert-arm64",
            formats=frozenset({"tflite"}),
            run="hub_litert_arm64.emulated:run",
            latency="hub_litert_arm64.emulated:latency",
            platform="arm64",
            prepare="hub_litert_arm64.setup:prepare",
            prepared="hub_litert_arm64.setup:is_prepared",
            description="LiteRT interpreter (XNNPACK) on an emulated Neoverse-N1 (ARMv8.2) under qemu user mode; "
                        "int8 inputs and outputs are quantized and dequantized exactly as by the litert backend; "
                        "latency is emulated time, not an ARM device's",
            # run in a worker, but needs only numpy: the aarch64 runtime lives in the prepared platform folder
            requires=("numpy>=1.23",),
        )
    ]
