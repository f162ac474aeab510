from __future__ import annotations

import pytest

from hub.declarations import Option, Request, Step, Target
from hub.errors import UsageError
from hub.planner import explain_no_route, plan_routes
from hub.plugins import Catalog, PluginRecord
from hub.states import ModelState, Requirement


def step(name, accepts, produces, **costs) -> Step:
    return Step(name=name, accepts=Requirement.of(**accepts), produces=produces, run="x:y", **costs)


def catalog_of(*steps: Step, compressors: tuple[Step, ...] = ()) -> Catalog:
    record = PluginRecord("test", "test", "built-in", converters=list(steps), compressors=list(compressors))
    every = list(steps) + list(compressors)
    requests = {r.name: r for s in every for r in s.satisfies}
    return Catalog([record], {}, {s.name: s for s in every}, {}, {}, {s.name: "test" for s in every},
                   requests=requests)


INT8 = Target("int8", "ort", Requirement.of(format="onnx", precision="int8"))
PRUNE = Request("prune", "traits", "pruned", "sparsity", "magnitude pruning to this fraction")
PRUNE_OPTIONS = (Option("sparsity", float, 0.5, "fraction of zero weights", between=(0.0, 1.0)),)
INT4 = Request("int4-weights", "precision", "int4", description="4-bit weights")
SOURCE = ModelState("torch-export")


def test_cheapest_route_first_then_alternatives_in_cost_order():
    catalog = catalog_of(
        step("fast-export", {"format": "torch-export"}, {"format": "onnx"}, seconds=1),
        step("slow-export", {"format": "torch-export"}, {"format": "onnx"}, seconds=90),
        step("via-script", {"format": "torch-export"}, {"format": "torchscript"}, seconds=1),
        step("script-export", {"format": "torchscript"}, {"format": "onnx"}, seconds=1),
        compressors=(step("quantize", {"format": "onnx", "precision": "fp32"}, {"precision": "int8"},
                          fidelity_loss=0.01),),
    )
    routes = plan_routes(catalog, SOURCE, INT8, 1_000_000, count=5)
    assert [r.names for r in routes] == [
        ["fast-export", "quantize"], ["via-script", "script-export", "quantize"], ["slow-export", "quantize"]]
    assert routes[0].cost < routes[1].cost < routes[2].cost
    assert routes[0].steps[1].kind == "compressor"


def test_ties_break_deterministically_on_step_names():
    a = step("b-export", {"format": "torch-export"}, {"format": "onnx", "precision": "int8"})
    b = step("a-export", {"format": "torch-export"}, {"format": "onnx", "precision": "int8"})
    for order in ((a, b), (b, a)):
        routes = plan_routes(catalog_of(*order), SOURCE, INT8, 0, count=2)
        assert [r.names for r in routes] == [["a-export"], ["b-export"]]


def test_prefer_reweights_the_cost_terms():
    lossy_fast = step("lossy", {"format": "torch-export"}, {"format": "onnx", "precision": "int8"},
                      seconds=1, fidelity_loss=0.05)
    exact_slow = step("exact", {"format": "torch-export"}, {"format": "onnx", "precision": "int8"},
                      seconds=100, fidelity_loss=0.0)
    catalog = catalog_of(lossy_fast, exact_slow)
    assert plan_routes(catalog, SOURCE, INT8, 0, prefer="speed")[0].names == ["lossy"]
    assert plan_routes(catalog, SOURCE, INT8, 0, prefer="fidelity")[0].names == ["exact"]
    with pytest.raises(UsageError, match="--prefer"):
        plan_routes(catalog, SOURCE, INT8, 0, prefer="cheapest")


def test_source_that_already_satisfies_the_target_gets_an_empty_route():
    routes = plan_routes(catalog_of(), ModelState("onnx", "int8"), INT8, 0)
    assert routes[0].names == [] and routes[0].cost == 0


def test_no_route_explains_what_is_reachable_and_what_would_connect():
    needs_missing = Step(name="tf-convert", accepts=Requirement.of(format="torch-export"),
                         produces={"format": "onnx", "precision": "int8"}, run="x:y",
                         requires=("surely-not-installed-package>=1",), extra="tf")
    catalog = catalog_of(step("to-script", {"format": "torch-export"}, {"format": "torchscript"}), needs_missing)
    assert plan_routes(catalog, SOURCE, INT8, 0) == []
    text = explain_no_route(catalog, SOURCE, INT8, 0)
    assert "torchscript/fp32/raw" in text and "precision=int8" in text
    assert "pip install 'conversion-hub[tf]'" in text


def test_routes_never_visit_a_state_twice():
    catalog = catalog_of(
        step("there", {"format": "torch-export"}, {"format": "onnx"}),
        step("back", {"format": "onnx"}, {"format": "torch-export"}),
        compressors=(step("q", {"format": "onnx", "precision": "fp32"}, {"precision": "int8"}),),
    )
    routes = plan_routes(catalog, SOURCE, INT8, 0, count=10)
    assert [r.names for r in routes] == [["there", "q"]]


def test_compression_requests_become_traits_the_planner_must_reach():
    from hub.requests import CompressionRequest, apply_requests

    prune_torch = step("torch-prune", {"format": "torch-export", "precision": "fp32"}, {"traits": "+pruned"},
                       seconds=1, options=PRUNE_OPTIONS, satisfies=(PRUNE,))
    prune_onnx = step("onnx-prune", {"format": "onnx", "precision": "fp32"}, {"traits": "+pruned"}, seconds=5,
                      options=PRUNE_OPTIONS, satisfies=(PRUNE,))
    catalog = catalog_of(step("export", {"format": "torch-export"}, {"format": "onnx"}),
                         compressors=(prune_torch, prune_onnx,
                                      step("quantize", {"format": "onnx", "precision": "fp32"}, {"precision": "int8"})))
    constrained = apply_requests(INT8, [CompressionRequest.parse("prune:0.5", catalog)], catalog)
    routes = plan_routes(catalog, SOURCE, constrained.target, 0, count=3)
    assert routes[0].names == ["torch-prune", "export", "quantize"]
    assert str(routes[0].steps[-1].result) == "onnx/int8/raw+pruned"
    assert constrained.trait_options == {"pruned": {"sparsity": 0.5}}


def test_a_request_the_target_cannot_run_fails_at_planning():
    from hub.errors import NoRouteError
    from hub.requests import CompressionRequest, apply_requests

    catalog = catalog_of(compressors=(
        step("prune", {"format": "onnx"}, {"traits": "+pruned"}, options=PRUNE_OPTIONS, satisfies=(PRUNE,)),
        step("int4", {"format": "onnx"}, {"precision": "int4"}, satisfies=(INT4,))))
    with pytest.raises(NoRouteError, match="int4-weights asks for precision int4, but target 'int8' runs only"):
        apply_requests(INT8, [CompressionRequest.parse("int4-weights", catalog)], catalog)
    with pytest.raises(UsageError, match="between 0 and 1"):
        CompressionRequest.parse("prune:1.5", catalog)
    with pytest.raises(UsageError, match="takes a float"):
        CompressionRequest.parse("prune:half", catalog)
    with pytest.raises(UsageError, match="unknown compression 'prune-channels'; known: int4-weights, prune"):
        CompressionRequest.parse("prune-channels:0.3", catalog)
    with pytest.raises(UsageError, match="int4-weights takes no value"):
        CompressionRequest.parse("int4-weights:8", catalog)


def test_compression_is_never_added_unless_requested():
    clip = step("clip", {"format": "torch-export"}, {"traits": "+clipped"}, seconds=0)
    catalog = catalog_of(step("export", {"format": "torch-export"}, {"format": "onnx", "precision": "int8"}),
                         compressors=(clip,))
    assert [r.names for r in plan_routes(catalog, SOURCE, INT8, 0, count=5)] == [["export"]]


def test_a_round_trip_through_another_format_is_offered_only_when_it_ends_another_way():
    to_tflite = step("to-tflite", {"format": "onnx", "precision": "fp32"}, {"format": "tflite"}, seconds=1)
    back = step("back-to-onnx", {"format": "tflite"}, {"format": "onnx", "graph": "optimized"}, seconds=1)
    export = step("export", {"format": "torch-export"}, {"format": "onnx"}, seconds=1)
    quantize = step("quantize", {"format": "onnx", "precision": "fp32", "graph": "optimized"}, {"precision": "int8"})
    with_cleanup = catalog_of(export, to_tflite, back,
                              step("cleanup", {"format": "onnx", "graph": "raw"}, {"graph": "optimized"}, seconds=50),
                              compressors=(quantize,))
    routes = plan_routes(with_cleanup, SOURCE, INT8, 1_000_000, count=5)
    assert [r.names for r in routes] == [["export", "cleanup", "quantize"]]  # cheaper detour not offered
    only_detour = catalog_of(export, to_tflite, back, compressors=(quantize,))
    assert [r.names for r in plan_routes(only_detour, SOURCE, INT8, 1_000_000, count=5)] == [
        ["export", "to-tflite", "back-to-onnx", "quantize"]]

    # a TFLite source: its own quantizer first; the round trip through ONNX ends with another quantizer, so it is
    # the fallback when the first refuses the model
    tflite_int8 = Target("tflite-int8", "litert", Requirement.of(format="tflite", precision="int8"))
    catalog = catalog_of(step("to-onnx", {"format": "tflite"}, {"format": "onnx"}, seconds=1),
                         step("onnx-to-tflite-int8", {"format": "onnx"}, {"format": "tflite", "precision": "int8"},
                              seconds=1),
                         compressors=(step("tflite-quantize", {"format": "tflite", "precision": "fp32"},
                                           {"precision": "int8"}, seconds=30),))
    assert [r.names for r in plan_routes(catalog, ModelState("tflite"), tflite_int8, 1_000_000, count=3)] == [
        ["tflite-quantize"], ["to-onnx", "onnx-to-tflite-int8"]]
