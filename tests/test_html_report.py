"""The HTML report: what it draws from a report's JSON, that it loads nothing, and how a browser shows it."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from hub.distributions import SAMPLE_POINTS, output_distributions
from hub.html_report import render_html
from hub.route_graph import route_graph_svg

CHARTS_OF_A_CLASSIFIER = {"route-graph", "fidelity-cosine-chosen", "fidelity-maxabs-chosen", "error-histogram-0",
                          "scatter-0", "latency", "size"}


class _Charts(HTMLParser):
    """Collects data-chart markers, failed-step groups and their tooltips."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[str] = []
        self.failed_steps: list[str] = []
        self._in_failed_edge = False
        self.failed_titles: list[str] = []
        self._title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if "data-chart" in attributes:
            self.charts.append(attributes["data-chart"])
        if tag == "g" and "edge-failed" in (attributes.get("class") or ""):
            self.failed_steps.append(attributes["data-step"])
            self._in_failed_edge = True
        self._title = tag == "title" and self._in_failed_edge

    def handle_data(self, data: str) -> None:
        if self._title:
            self.failed_titles.append(data)
            self._title = self._in_failed_edge = False


def charts_in(page: str) -> _Charts:
    parser = _Charts()
    parser.feed(page)
    return parser


def _step(name: str, source: str, result: str, cost: float = 1.0) -> dict:
    return {"name": name, "plugin": "p", "kind": "converter", "from": source, "to": result, "expected_seconds": 2.0,
            "fidelity_loss": 0.0, "size_ratio": 1.0, "cost": cost}


def _fidelity(cosine: float, max_abs: float, top1: float | None = 1.0) -> dict:
    return {"samples": 8, "max_abs": max_abs, "cosine": cosine, "top1_agreement": top1, "top5_containment": top1,
            "confident_top1_agreement": top1, "confident_samples": 8}


def failed_report() -> dict:
    """A conversion whose two routes both failed: one drifted at its second step, one crashed at its first."""
    drifted = [_step("export", "a/fp32", "b/fp32"), _step("quantize", "b/fp32", "b/int8")]
    crashed = [_step("other-export", "a/fp32", "c/fp32"), _step("quantize-c", "c/fp32", "b/int8")]
    record = {"name": "export", "plugin": "p", "kind": "converter", "state": "b/fp32", "seconds": 1.0, "bytes": 100,
              "cached": False, "notes": {}, "fidelity": _fidelity(1.0, 1e-6)}
    return {
        "schema": 1, "source": {"path": "/m/model.pt2", "format": "a", "state": "a/fp32", "bytes": 400},
        "target": {"name": "t-int8", "backend": "rt", "requires": "precision=int8",
                   "tolerance": {"min_cosine": 0.98, "min_top1": 0.9, "max_abs": None}},
        "route": [], "steps": [], "final": None, "error": "all 2 route(s) tried to t-int8 failed:\n  ...",
        "alternatives_tried": [
            {"route": ["export", "quantize"], "failed_step": "quantize", "detail": None,
             "reason": "output drifted beyond the tolerance of t-int8: cosine 0.85 < 0.98",
             "steps": [record, {**record, "name": "quantize", "state": "b/int8",
                                "fidelity": _fidelity(0.85, 6.2, 0.75)}]},
            {"route": ["other-export", "quantize-c"], "failed_step": "other-export", "detail": "Traceback ...",
             "reason": "the exporter raised: unsupported operator Foo", "steps": []}],
        "planned_routes": [{"cost": 2.0, "steps": drifted}, {"cost": 3.0, "steps": crashed}],
        "cost_weights": {"seconds": 0.02, "fidelity": 100.0, "size": 0.5, "hop": 0.2},
        "samples": {"origin": "16 seeded random samples (seed 0)", "count": 16}, "versions": {"hub": "0"},
        "warnings": [],
    }


def test_distributions_count_every_value_and_always_sample_the_worst():
    generator = np.random.default_rng(3)
    reference = [[generator.standard_normal((1, 500)).astype(np.float32)] for _ in range(2)]
    candidate = [[r[0] + np.float32(0.01)] for r in reference]
    candidate[1][0][0, 123] += 5.0
    first = output_distributions(["logits"], reference, candidate)
    again = output_distributions(["logits"], reference, candidate)
    assert first == again  # the same report on every run
    distribution = first[0]
    assert distribution["name"] == "logits" and distribution["shape"] == [1, 500]
    assert distribution["values"] == 1000 and sum(distribution["error_histogram"]["counts"]) == 1000
    assert distribution["error_histogram"]["counts"][0] == 999 and distribution["error_histogram"]["counts"][-1] == 1
    assert distribution["error_quantiles"]["max"] == pytest.approx(5.01, abs=1e-3)
    assert distribution["error_quantiles"]["p50"] == pytest.approx(0.01, abs=1e-4)
    sample = distribution["sample"]
    assert len(sample["source"]) == len(sample["result"]) <= SAMPLE_POINTS
    worst = float(reference[1][0][0, 123])
    assert any(abs(s - worst) < 1e-4 and abs(r - s - 5.01) < 1e-3 for s, r in zip(sample["source"], sample["result"]))


def test_distributions_name_unnamed_outputs_by_position_and_skip_nonfinite_values():
    reference = [[np.array([1.0, np.nan, 3.0]), np.zeros((2, 2))]]
    candidate = [[np.array([1.5, np.nan, 3.0]), np.ones((2, 2))]]
    scores, boxes = output_distributions([], reference, candidate)
    assert (scores["name"], boxes["name"]) == ("output_0", "output_1")
    assert scores["values"] == 2 and scores["nonfinite"] == 1 and scores["error_quantiles"]["max"] == 0.5
    assert boxes["values"] == 4 and boxes["error_quantiles"]["p50"] == 1.0


def test_distributions_of_a_large_output_compare_every_nth_value(monkeypatch):
    monkeypatch.setattr("hub.distributions.MAX_VALUES", 1000)
    reference = [[np.arange(3000, dtype=np.float32)]]
    (distribution,) = output_distributions(["map"], reference, [[reference[0][0] + np.float32(0.5)]])
    assert distribution["every"] == 3 and distribution["values"] == 1000
    assert distribution["error_quantiles"]["max"] == 0.5


def test_failed_routes_are_marked_at_their_failing_step_with_their_reason():
    page = render_html(failed_report())
    found = charts_in(page)
    assert sorted(found.failed_steps) == ["other-export", "quantize"]
    assert any("cosine 0.85 < 0.98" in title for title in found.failed_titles)
    assert any("unsupported operator Foo" in title for title in found.failed_titles)
    assert {"route-graph", "fidelity-cosine-failed-1", "fidelity-maxabs-failed-1"} <= set(found.charts)
    assert 'data-warning="random-samples"' in page  # random inputs are flagged


def test_page_loads_nothing_from_outside():
    page = render_html(failed_report())
    assert not re.search(r"""(src|href)\s*=|@import|url\((?!#)|<script|<link|<img""", page, re.IGNORECASE)
    assert set(re.findall(r"https?://[^\s\"'<]+", page)) <= {"http://www.w3.org/2000/svg"}  # a namespace, not a fetch
    assert page.isascii()  # characters as references: the same bytes whatever the locale's encoding


def test_a_model_with_hundreds_of_outputs_still_makes_a_page_under_2_mb():
    generator = np.random.default_rng(0)
    reference = [[generator.standard_normal((1, 500)) for _ in range(300)] for _ in range(4)]
    candidate = [[a + generator.normal(0, 0.01, a.shape) for a in sample] for sample in reference]
    report = failed_report()
    report["final"] = {"path": "m.onnx", "format": "onnx", "state": "b/int8", "bytes": 100, "backend": "rt",
                       "latency_ms": 1.0, "source_latency_ms": 2.0, "fidelity": _fidelity(0.999, 0.05, None),
                       "distributions": output_distributions([], reference, candidate)}
    page = render_html(report)
    assert len(page.encode()) < 2_000_000
    assert "scatter-23" in charts_in(page).charts and "scatter-24" not in charts_in(page).charts
    assert "276 more outputs are not drawn" in page


def test_each_output_shows_its_own_figures_from_fidelity_outputs():
    reference = [[np.zeros((1, 4)), np.zeros((1, 3))]]
    candidate = [[np.full((1, 4), 0.1), np.full((1, 3), 0.2)]]
    outputs = [{"name": "output 0", "kind": "tensor", "cosine": 0.91, "max_abs": 0.1, "worst_slice_cosine": 0.25,
                "worst_slice": 3, "slice_axis": 1},
               {"name": "output 1", "kind": "scores", "cosine": 0.97, "max_abs": 0.2,
                "top1_agreement": 0.875, "top5_containment": 1.0, "confident_top1_agreement": None}]
    report = failed_report()
    report["final"] = {"path": "m.onnx", "format": "onnx", "state": "b/int8", "bytes": 100, "backend": "rt",
                       "latency_ms": None, "source_latency_ms": None,
                       "fidelity": {**_fidelity(0.91, 0.2, 0.875), "outputs": outputs},
                       "distributions": output_distributions([], reference, candidate)}
    page = render_html(report)
    first, second = page.split('data-output="output_0"')[1].split('data-output="output_1"')
    assert "#3 along axis 1" in first and "#3 along" not in second and "87.5%" in second and "87.5%" not in first


def test_sensitivity_is_drawn_only_when_a_step_reports_it():
    report = failed_report()
    assert "Quantization:" not in render_html(report)
    report["steps"] = [{"name": "quantize", "state": "b/int8", "bytes": 10, "seconds": 1.0, "fidelity": None,
                        "notes": {"sensitivity": {"conv1": 0.2, "fc": 0.9}, "higher_precision": ["fc"]}}]
    page = render_html(report)
    assert "Quantization: ladder and sensitivity" in page and "sensitivity" in charts_in(page).charts
    assert "fc: 0.9 · kept".encode("ascii", "xmlcharrefreplace").decode() in page


def test_graph_lays_the_chosen_route_straight_down_and_shows_cost_terms_on_hover():
    planned = [{"cost": 2.0, "steps": [_step("export", "a", "b", 0.8), _step("slim", "b", "c", 0.7)]},
               {"cost": 2.5, "steps": [_step("export", "a", "b", 0.8), _step("prep", "b", "c", 1.2)]}]
    graph = ElementTree.fromstring(route_graph_svg("a", planned, ["export", "slim"], standalone=True))
    namespace = {"svg": "http://www.w3.org/2000/svg"}
    groups = list(graph.iter("{http://www.w3.org/2000/svg}g"))
    states = {g.get("data-state"): g.findall("svg:rect", namespace)[-1] for g in groups if g.get("data-state")}
    assert {float(rect.get("x")) for rect in states.values()} == {float(states["a"].get("x"))}  # one column
    assert [float(states[s].get("y")) for s in "abc"] == sorted(float(states[s].get("y")) for s in "abc")
    edges = {g.get("data-step"): g for g in groups if g.get("data-step")}
    assert edges["slim"].get("class") == "edge edge-chosen" and edges["prep"].get("class") == "edge edge-considered"
    assert "cost 1.2 = expected 2 s" in edges["prep"].find("svg:title", namespace).text


def hub_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True,
                          env=os.environ, timeout=600)


def test_hub_report_rerenders_a_report_json(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(failed_report()))
    result = hub_command("report", str(tmp_path / "report.json"), "-o", str(tmp_path / "page.html"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "page.html").read_text() == render_html(failed_report())
    assert hub_command("report", str(tmp_path / "missing.json")).returncode == 2


def test_hub_plan_graph_draws_the_route_without_running(tmp_path):
    generator = np.random.default_rng(1)
    model = tmp_path / "linear.npz"
    np.savez(model, weight=generator.standard_normal((3, 5)), bias=generator.standard_normal(3),
             hub_linear=np.array(1))
    result = hub_command("plan", str(model), "--to", "onnxruntime-cpu", "--graph", str(tmp_path / "plan.svg"))
    assert result.returncode == 0, result.stderr
    graph = ElementTree.parse(tmp_path / "plan.svg").getroot()
    chosen = [g.get("data-step") for g in graph.iter("{http://www.w3.org/2000/svg}g")
              if g.get("class") == "edge edge-chosen"]
    assert sorted(chosen) == ["linear-to-onnx", "onnxslim"]


# ---- in a real browser ---------------------------------------------------------------------------------------

def chromium_path() -> str | None:
    return os.environ.get("HUB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def open_in_browser(page: Path, screenshot: Path) -> tuple[list[str], list[str], set[str]]:
    """Console errors, requested URLs and the data-chart markers of a page loaded in headless Chromium."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.on("request", lambda request: requests.append(request.url))
            tab.goto(page.resolve().as_uri(), wait_until="load")
            charts = set(tab.eval_on_selector_all("[data-chart]", "nodes => nodes.map(n => n.dataset.chart)"))
            tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return errors, requests, charts


def assert_not_blank(screenshot: Path) -> None:
    from PIL import Image

    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB").resize((300, 600)))
    inked = (pixels.min(axis=2) < 200).mean()
    colours = len(np.unique(pixels.reshape(-1, 3) // 16, axis=0))
    assert inked > 0.02 and colours > 20, f"{inked:.1%} inked, {colours} colours"


@pytest.mark.slow
@pytest.mark.skipif(chromium_path() is None, reason="no chromium on PATH (make test installs Debian's chromium)")
def test_browser_shows_a_real_conversion_and_a_failed_one_without_errors_or_requests(digits_model, tmp_path):
    import hub

    out = tmp_path / "out"
    hub.convert(digits_model["model"], to="cpu-int8-dynamic", calibration=digits_model["calibration"], output=out)
    errors, requests, charts = open_in_browser(out / "report.html", tmp_path / "converted.png")
    assert errors == [] and requests == [(out / "report.html").resolve().as_uri()]
    assert CHARTS_OF_A_CLASSIFIER <= charts
    assert_not_blank(tmp_path / "converted.png")
    assert (out / "report.html").stat().st_size < 2_000_000

    failed = hub_command("convert", str(digits_model["model"]), "--to", "cpu-int8-dynamic", "--calibration",
                         str(digits_model["calibration"]), "--min-cosine", "0.999999", "--max-routes", "1",
                         "-o", str(tmp_path / "never"), "--report", str(tmp_path / "failed.json"), "--quiet")
    assert failed.returncode == 5 and not (tmp_path / "never").exists()
    assert f"the report of the routes tried: {tmp_path / 'failed.html'}" in failed.stderr
    errors, requests, charts = open_in_browser(tmp_path / "failed.html", tmp_path / "failed.png")
    assert errors == [] and len(requests) == 1 and "route-graph" in charts
    assert_not_blank(tmp_path / "failed.png")
    found = charts_in((tmp_path / "failed.html").read_text())
    report = json.loads((tmp_path / "failed.json").read_text())
    assert report["final"] is None and report["alternatives_tried"]
    assert set(found.failed_steps) == {f["failed_step"] for f in report["alternatives_tried"]}
    assert any("cosine" in title and "0.999999" in title for title in found.failed_titles)


@pytest.mark.slow
@pytest.mark.skipif(chromium_path() is None, reason="no chromium on PATH (make test installs Debian's chromium)")
def test_browser_shows_each_output_of_a_two_output_detector(tmp_path):
    import torch

    import hub
    from fixtures_models import make_tiny_detector

    hub.convert(make_tiny_detector(), to="cpu-int8-dynamic", example_inputs=(torch.randn(1, 3, 16, 16),),
                output=tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    boxes, scores = report["final"]["distributions"]
    assert (boxes["shape"], scores["shape"]) == ([1, 16, 4], [1, 16, 3])
    assert boxes["values"] == 16 * 64 and scores["values"] == 16 * 48  # every value of the 16 random samples
    errors, requests, charts = open_in_browser(tmp_path / "out" / "report.html", tmp_path / "detector.png")
    assert errors == [] and len(requests) == 1
    assert {"error-histogram-0", "scatter-0", "error-histogram-1", "scatter-1"} <= charts
    assert_not_blank(tmp_path / "detector.png")
