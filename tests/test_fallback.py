"""A cheaper converter that fails (raises, exits, is killed, hangs, or drifts) must hand over to the next route."""
from __future__ import annotations

import pytest

import hub
from hub.plugins import reset_catalog


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture
def faulty(monkeypatch, shared_cache):
    """Arms the failing converter; the good routes' steps are cached across these tests to keep them fast."""
    def arm(mode: str) -> None:
        monkeypatch.setenv("HUB_CACHE", str(shared_cache))
        monkeypatch.setenv("HUB_PLUGINS", "hub_faulty")
        monkeypatch.setenv("HUB_FAULT", mode)
        reset_catalog()
    return arm


@pytest.mark.parametrize("mode, reason", [
    ("raise", "RuntimeError: the exporter broke"),
    ("exit", "SystemExit: 1"),
    ("kill", "killed by SIGKILL"),
    ("partial", "MemoryError"),
    ("drift", "drifted beyond the tolerance"),
])
def test_falls_back_when_the_first_route_fails(faulty, digits_model, tmp_path, mode, reason):
    faulty(mode)
    assert hub.plan(digits_model["model"], to="onnxruntime-cpu").routes[0].names[0] == "faulty-export"
    result = hub.convert(digits_model["model"], to="onnxruntime-cpu", output=tmp_path)
    tried = result.report.alternatives_tried
    assert [t.step for t in tried] == ["faulty-export"] and reason in tried[0].reason
    assert result.report.route[0] != "faulty-export"
    assert result.report.final.fidelity.cosine > 0.9999
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.onnxruntime-cpu.onnx", "report.html", "report.json"]


def test_timeout_fails_the_route_and_everything_failing_writes_nothing(faulty, digits_model, tmp_path,
                                                                     monkeypatch):
    faulty("hang")
    monkeypatch.setenv("HUB_CACHE", str(tmp_path / "own-cache"))  # the drift test cached a faulty-export output
    with pytest.raises(hub.StepFailedError, match="faulty-export: timed out after 20 s") as caught:
        hub.convert(digits_model["model"], to="onnxruntime-cpu", output=tmp_path / "out", max_routes=1,
                    step_timeout=20)
    assert "all 1 route(s) tried" in caught.value.message
    assert not (tmp_path / "out").exists()


def test_a_step_that_drifts_climbs_its_ladder_until_a_rung_passes(faulty, digits_model, tmp_path, monkeypatch):
    faulty("ladder")
    monkeypatch.setenv("HUB_CACHE", str(tmp_path / "own-cache"))
    result = hub.convert(digits_model["model"], to="onnxruntime-cpu", output=tmp_path / "out")
    report = result.report
    assert report.route[0] == "faulty-export" and not report.alternatives_tried
    ladder = report.steps[0].notes["ladder"]
    assert [rung["options"] for rung in ladder] == [{}, {"fault": "drift", "rung": 1}, {"fault": "none"}]
    assert [bool(rung["violations"]) for rung in ladder] == [True, True, False]
    assert ladder[0]["fidelity"]["cosine"] < 0.99 and ladder[2]["fidelity"]["cosine"] > 0.9999
    assert report.steps[0].notes["rung"] == {"fault": "none"}
    latency = report.steps[0].notes["latency_ms"]  # what the escalation costs in speed, measured
    assert latency["plain"] > 0 and latency["chosen_rung"] > 0
    assert latency["slowdown"] == pytest.approx(latency["chosen_rung"] / latency["plain"], rel=0.05)
    assert report.final.fidelity.cosine > 0.9999
