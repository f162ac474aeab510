"""hub.kit: the helpers every plugin shares instead of keeping its own copy."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hub import kit


def test_latency_timer_warms_up_then_times_each_repeat():
    calls = []
    timings = kit.latency_timings_ms(lambda: calls.append(1), repeats=40)
    assert len(timings) == 40 and len(calls) == 44  # a tenth of the repeats as warm-up, at least 3
    calls.clear()
    assert kit.median_latency_ms(lambda: calls.append(1), repeats=0, warmup=0) >= 0 and len(calls) == 1


def test_magnitude_threshold_selects_the_requested_fraction():
    magnitudes = np.array([0.9, 0.1, 0.5, 0.2, 0.7, 0.3])
    assert kit.magnitude_threshold(magnitudes, 0.5) == 0.3  # three of six at or below it
    assert kit.magnitude_threshold(magnitudes, 0.0) == -1.0  # none: zeroing "at or below" zeroes nothing


def test_exempt_layers_and_sparsity_notes():
    layers = [("first", False), ("depthwise", True), ("last", False)]
    exempt = kit.exempt_layers(layers, {"exempt_first_layer": True, "exempt_depthwise": True})
    assert list(exempt) == ["first", "depthwise"]
    notes = kit.sparsity_notes({"first": (0, 10), "depthwise": (0, 10), "last": (40, 80)}, {"last"}, exempt, 200)
    assert notes["sparsity"] == 0.5 and notes["sparsity_all_weights"] == 0.4 and notes["sparsity_all_parameters"] == 0.2
    assert notes["layer_sparsity_range"] == [0.0, 0.5]


def test_working_directory_returns_to_where_it_was(tmp_path):
    before = Path.cwd()
    with kit.working_directory(tmp_path):
        assert Path.cwd() == tmp_path.resolve()
    assert Path.cwd() == before
