"""The conversion report as one self-contained HTML page (`OUT/report.html`, `hub report`).

Rendered from the report's JSON alone (Report.to_json), so a report.json re-renders the same page anywhere.
The page loads nothing: styles are inline, charts are inline SVG (hub.svg, hub.route_graph), hover text is SVG
`<title>`, there is no script and no font but the system's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from hub import svg
from hub.report import human_bytes
from hub.route_graph import CHOSEN, FAILED_HERE, route_graph_svg, route_statuses
from hub.svg import esc, number

GOOD, BAD = "good", "bad"
MAX_OUTPUTS_DRAWN = 24  # about 25 KB of SVG each: a model with hundreds of outputs still makes a page under 2 MB

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --source:#2c6fb7; --result:#e07b00; --good:#1b8a5a;
        --bad:#c62828; --warn:#8a5a00; --warn-bg:#fff4e0; --bad-bg:#fdecea; --card:#f7f9fb; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 19px; margin: 36px 0 6px; padding-top: 14px; border-top: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.lead, p.note, .muted { color: var(--muted); }
p.note { font-size: 13px; margin: 4px 0 10px; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
              font-size: 13px; }
.status { display: inline-block; padding: 2px 10px; border-radius: 12px; font-size: 13px; font-weight: 600;
          vertical-align: middle; margin-left: 8px; color: #fff; }
.status.good { background: var(--good); } .status.bad { background: var(--bad); }
.banner { border-radius: 6px; padding: 10px 14px; margin: 14px 0; font-weight: 500; }
.banner.warn { background: var(--warn-bg); border-left: 5px solid #e0a100; color: var(--warn); }
.banner.bad { background: var(--bad-bg); border-left: 5px solid var(--bad); color: #8e1c1c; }
td.steps { width: 46%; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; margin: 18px 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .label { font-size: 12px; text-transform: uppercase; letter-spacing: 0.06em; color: var(--muted); }
.card .value { font-size: 22px; font-weight: 650; margin: 2px 0; font-variant-numeric: tabular-nums; }
.card .sub { font-size: 13px; color: var(--muted); }
.good-text { color: var(--good); } .bad-text { color: var(--bad); }
.route { margin: 4px 0 0; }
.chip { display: inline-block; border: 1px solid var(--line); border-radius: 4px; padding: 1px 7px; margin: 2px 0;
        font-size: 13px; background: #fff; }
.chip.chosen { border-color: var(--good); color: var(--good); font-weight: 600; }
.chip.failed { border-color: var(--bad); color: var(--bad); font-weight: 600; }
.arrow { color: var(--muted); margin: 0 4px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 8px 0 4px;
        font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12.5px; }
td.num, th.num { text-align: right; }
tr.chosen td:first-child { box-shadow: inset 3px 0 var(--good); }
tr.failed td:first-child { box-shadow: inset 3px 0 var(--bad); }
.figure-row { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 18px;
              align-items: start; }
figure { margin: 10px 0; break-inside: avoid; page-break-inside: avoid; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; }
.graph { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; padding: 8px; background: #fff; }
.output { border: 1px solid var(--line); border-radius: 8px; padding: 4px 16px 10px; margin: 14px 0;
          break-inside: avoid; }
.metrics { display: flex; flex-wrap: wrap; gap: 8px 26px; margin: 6px 0 4px; }
.metric .k { display: block; font-size: 12px; color: var(--muted); }
.metric b { font-size: 16px; font-variant-numeric: tabular-nums; }
details summary { cursor: pointer; color: var(--muted); font-size: 13px; }
pre { white-space: pre-wrap; font-size: 12px; background: var(--card); padding: 8px; border-radius: 6px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
@media print {
  body { font-size: 11pt; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  main { max-width: none; padding: 0; }
  h2 { break-after: avoid; page-break-after: avoid; }
  .graph { overflow: visible; border: none; } .output, figure, table { break-inside: avoid; }
  .card { border-color: #bbb; } a { color: inherit; text-decoration: none; }
  details > *:not(summary) { display: block; }
}
"""


def render_html(report: dict) -> str:
    """The whole page for a report (report.json's content); a failed conversion's report (final is null)
    renders its failed routes."""
    title = f"{Path(str(report['source'].get('path', 'model'))).name} → {report['target'].get('name', '?')}"
    sections = [
        _header(report, title),
        _samples_banner(report),
        _summary(report),
        _planning(report),
        _fidelity_section(report),
        _outputs_section(report),
        _latency_and_size(report),
        _sensitivity_section(report),
        _warnings_section(report),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f"<title>{esc(title)} · conversion report</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(s for s in sections if s)}"
            f"<footer>conversion-hub report, schema {esc(report.get('schema', '?'))}. Re-render with "
            f"<code>hub report report.json -o report.html</code>.</footer></main></body></html>\n"
            ).encode("ascii", "xmlcharrefreplace").decode("ascii")  # the same bytes whatever the locale's encoding


# ---- header and summary -----------------------------------------------------------------------------------

def _succeeded(report: dict) -> bool:
    return report.get("final") is not None


def _header(report: dict, title: str) -> str:
    ok = _succeeded(report)
    status = (f'<span class="status good">delivered</span>' if ok
              else f'<span class="status bad">failed</span>')
    source, final = report["source"], report.get("final") or {}
    states = f"{esc(source.get('state', '?'))} → {esc(final.get('state', 'no result'))}"
    error = report.get("error")
    failure = ""
    if not ok:
        tried = len(report.get("alternatives_tried", []))
        failure = (f'<div class="banner bad">No route delivered a model: {tried} route(s) tried, each failed at '
                   "the step marked in red below."
                   + (f"<br><span class=\"mono\">{esc(error.splitlines()[0])}</span>" if error else "") + "</div>")
    return (f"<header><h1>{esc(title)}{status}</h1>"
            f"<p class=\"lead\"><code>{esc(source.get('path', ''))}</code> · {states}"
            + (f" · backend {esc(final['backend'])}" if final.get("backend") else "") + f"</p>{failure}</header>")


def _samples_banner(report: dict) -> str:
    origin = str(report.get("samples", {}).get("origin", ""))
    if "random" not in origin:
        return ""
    return ('<div class="banner warn" data-warning="random-samples"><b>Verified on random inputs.</b> '
            f"{esc(origin)}: fidelity figures below say how the result follows the source on noise, not on real "
            "data. Pass <code>--calibration</code> with real samples for numbers you can rely on.</div>")


def _summary(report: dict) -> str:
    final = report.get("final")
    source, target = report["source"], report["target"]
    tolerance = target.get("tolerance", {})
    cards = []
    if final:
        ratio = final["bytes"] / source["bytes"] if source.get("bytes") else None
        cards.append(_card("size", human_bytes(final["bytes"]),
                           f"source {human_bytes(source.get('bytes'))}" + (f" · {ratio:.2f}×" if ratio else "")))
        latency, source_latency = final.get("latency_ms"), final.get("source_latency_ms")
        speed = ""
        if latency and source_latency:
            speed = (f" · {source_latency / latency:.1f}× faster" if latency < source_latency
                     else f" · {latency / source_latency:.1f}× slower")
        cards.append(_card("latency, batch 1", f"{number(latency)} ms" if latency is not None else "not measured",
                           f"source {number(source_latency)} ms" + speed))
        fidelity = final.get("fidelity")
        if fidelity:
            meets = fidelity["cosine"] >= tolerance.get("min_cosine", 0)
            cards.append(_card("fidelity (cosine)", f"{fidelity['cosine']:.6f}",
                               f"bound ≥ {tolerance.get('min_cosine')} · max-abs {number(fidelity['max_abs'])}"
                               + (f" · top-1 {fidelity['top1_agreement']:.1%}"
                                  if fidelity.get("top1_agreement") is not None else ""),
                               GOOD if meets else BAD))
        else:
            cards.append(_card("fidelity", "not verified", "run without --no-verify to measure it", BAD))
    else:
        cards.append(_card("result", "none", f"{len(report.get('alternatives_tried', []))} route(s) failed", BAD))
    route = report.get("route") or []
    chips = '<span class="arrow">→</span>'.join(f'<span class="chip chosen">{esc(s)}</span>' for s in route)
    route_line = (f'<p class="route"><b>Route:</b> {chips or "(the source already meets the target)"}</p>'
                  if final else "")
    return (f'<section><div class="cards">{"".join(cards)}</div>{route_line}'
            f'<p class="note">target <b>{esc(target.get("name"))}</b>: {esc(target.get("requires", ""))}, '
            f'run on {esc(target.get("backend", "?"))}; tolerance: cosine ≥ {esc(tolerance.get("min_cosine"))}'
            + (f", top-1 ≥ {esc(tolerance['min_top1'])}" if tolerance.get("min_top1") is not None else "")
            + (f", max-abs ≤ {esc(tolerance['max_abs'])}" if tolerance.get("max_abs") is not None else "")
            + f"</p>{_versions_line(report)}</section>")


def _versions_line(report: dict) -> str:
    versions = report.get("versions") or {}
    if not versions:
        return ""
    listed = " · ".join(f"{esc(name)} {esc(version)}" for name, version in sorted(versions.items()))
    return f'<p class="note">versions: {listed}</p>'


def _card(label: str, value: str, sub: str, tone: str = "") -> str:
    tone_class = f" {tone}-text" if tone else ""
    return (f'<div class="card"><div class="label">{esc(label)}</div><div class="value{tone_class}">{esc(value)}'
            f'</div><div class="sub">{esc(sub)}</div></div>')


# ---- planning -----------------------------------------------------------------------------------------------

def _planning(report: dict) -> str:
    planned = report.get("planned_routes", [])
    failures = report.get("alternatives_tried", [])
    chosen = report.get("route") if _succeeded(report) else None
    graph = route_graph_svg(report["source"].get("state", "?"), planned, chosen, failures)
    weights = report.get("cost_weights", {})
    formula = (f"cost per step = {number(weights.get('seconds'))}·seconds + {number(weights.get('fidelity'))}·"
               f"fidelity loss + {number(weights.get('size'))}·size ratio + {number(weights.get('hop'))}")
    return (f"<section><h2>Planning graph</h2><p class=\"note\">Each box is a model state, each arrow a step. "
            f"Hover a step for its cost terms, a failed step for its reason. {esc(formula)}.</p>"
            f'<div class="graph">{graph}</div>{_routes_table(planned, chosen, failures)}</section>')


def _routes_table(planned: Sequence[dict], chosen: Sequence[str] | None, failures: Sequence[dict]) -> str:
    rows = []
    for rank, (route, status, failure) in enumerate(route_statuses(planned, chosen, failures), 1):
        failed_at = failure.get("failed_step") if failure else None
        chips = []
        for step in route.get("steps", []):
            kind = "chosen" if status == CHOSEN else ("failed" if step["name"] == failed_at else "")
            terms = (f"{step.get('plugin')} {step.get('kind')}: {step.get('from')} -> {step.get('to')}; cost "
                     f"{number(step.get('cost'), 4)}: expected {number(step.get('expected_seconds'))} s, fidelity "
                     f"loss {number(step.get('fidelity_loss'))}, size ratio {number(step.get('size_ratio'))}")
            chips.append(f'<span class="chip {kind}" title="{esc(terms)}">{esc(step["name"])}</span>')
        outcome = {CHOSEN: '<b class="good-text">chosen: delivered</b>',
                   FAILED_HERE: f'<b class="bad-text">failed at {esc(failed_at)}</b>: '
                                f'{esc(_one_line((failure or {}).get("reason", "")))}'}.get(
            status, '<span class="muted">not run</span>')
        rows.append(f'<tr class="{status}"><td class="num">{rank}</td><td class="num">{number(route.get("cost"), 4)}'
                    f'</td><td class="steps">{"<span class=arrow>→</span>".join(chips) or "(none)"}</td>'
                    f'<td>{outcome}</td></tr>')
    return ('<table data-table="routes"><thead><tr><th class="num">#</th><th class="num">cost</th><th>steps (hover '
            'for cost terms)</th><th>outcome</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


# ---- fidelity along the route ------------------------------------------------------------------------------

def _fidelity_section(report: dict) -> str:
    tolerance = report["target"].get("tolerance", {})
    parts = []
    if _succeeded(report) and report.get("steps"):
        parts.append(_fidelity_along("Chosen route", report["steps"], tolerance, "chosen"))
    for index, failure in enumerate(report.get("alternatives_tried", []), 1):
        steps = [s for s in failure.get("steps", []) if s.get("fidelity")]
        if steps and steps[-1]["name"] != failure.get("failed_step"):  # it failed before it could be verified
            steps.append({"name": f"✗ {failure.get('failed_step')}", "fidelity": None,
                          "failed": _one_line(failure.get("reason", ""))})
        if steps:
            parts.append(_fidelity_along(f"Failed route {index} (failed at {failure.get('failed_step')})", steps,
                                         tolerance, f"failed-{index}"))
    if not parts:
        return ""
    return ("<section><h2>Fidelity along the route</h2><p class=\"note\">After every step the artifact runs on the "
            "same samples as the source. Red dashed lines are the target's tolerance.</p>" + "".join(parts)
            + "</section>")


def _fidelity_along(title: str, steps: Sequence[dict], tolerance: dict, key: str) -> str:
    names = [s["name"] for s in steps]
    series_cos, series_abs = [], []
    for index, (output, colour) in enumerate(zip(_output_names(steps), svg.SERIES * 4)):
        values = [_output_fidelity(s.get("fidelity"), output) for s in steps]
        label = output or "all outputs"
        series_cos.append((label, [v.get("cosine") if v else None for v in values], colour))
        series_abs.append((label, [v.get("max_abs") if v else None for v in values], colour))
    min_cosine = tolerance.get("min_cosine")
    cosine_chart = svg.lines(names, series_cos, "cosine vs source",
                             (f"min cosine {min_cosine}", min_cosine) if min_cosine is not None else None,
                             chart=f"fidelity-cosine-{key}")
    max_abs = tolerance.get("max_abs")
    abs_chart = svg.lines(names, series_abs, "max |error| (log)",
                          (f"max-abs {max_abs}", max_abs) if max_abs is not None else None, log=True,
                          chart=f"fidelity-maxabs-{key}")
    return (f"<h3>{esc(title)}</h3><div class=\"figure-row\"><figure>{cosine_chart}<figcaption>Mean cosine "
            f"between flattened outputs, per step.</figcaption></figure><figure>{abs_chart}<figcaption>Largest "
            f"absolute difference, per step.</figcaption></figure></div>{_fidelity_table(steps)}")


def _output_names(steps: Sequence[dict]) -> list[str | None]:
    """The per-output names when verification reports them (fidelity.outputs), else one summary series."""
    names: list[str | None] = []
    for step in steps:
        for output in (step.get("fidelity") or {}).get("outputs") or []:
            if output.get("name") not in names:
                names.append(output.get("name"))
    return names or [None]


def _output_fidelity(fidelity: dict | None, name: str | None) -> dict | None:
    if not fidelity:
        return None
    if name is None:
        return fidelity
    return next((o for o in fidelity.get("outputs") or [] if o.get("name") == name), None)


def _fidelity_table(steps: Sequence[dict]) -> str:
    rows = []
    for step in steps:
        if step.get("failed"):
            rows.append(f"<tr><td class=bad-text>{esc(step['name'])}</td><td colspan=6 class=bad-text>"
                        f"{esc(step['failed'])}</td></tr>")
            continue
        fidelity = step.get("fidelity") or {}
        top1 = fidelity.get("top1_agreement")
        rows.append(f"<tr><td>{esc(step['name'])}</td><td class=mono>{esc(step.get('state', ''))}</td>"
                    f"<td class=num>{human_bytes(step.get('bytes'))}</td>"
                    f"<td class=num>{number(step.get('seconds'))} s{' (cached)' if step.get('cached') else ''}</td>"
                    f"<td class=num>{fidelity.get('cosine', '-')}</td>"
                    f"<td class=num>{number(fidelity.get('max_abs'))}</td>"
                    f"<td class=num>{'-' if top1 is None else f'{top1:.1%}'}</td></tr>")
    return ("<table data-table=\"steps\"><thead><tr><th>step</th><th>state</th><th class=num>size</th>"
            "<th class=num>time</th><th class=num>cosine</th><th class=num>max-abs</th><th class=num>top-1</th></tr>"
            "</thead><tbody>" + "".join(rows) + "</tbody></table>")


# ---- per output ---------------------------------------------------------------------------------------------

def _outputs_section(report: dict) -> str:
    final = report.get("final") or {}
    distributions = final.get("distributions") or []
    fidelity = final.get("fidelity") or {}
    if not distributions:
        return ""
    blocks = []
    for index, distribution in enumerate(distributions[:MAX_OUTPUTS_DRAWN]):
        per_output = fidelity.get("outputs") or []
        own = next((o for o in per_output if o.get("name") == distribution["name"]), None)
        if own is None and len(per_output) == len(distributions):  # unnamed outputs: both in the reference's order
            own = per_output[index]
        if own is None and len(distributions) == 1 and not per_output:
            own = fidelity  # a single output: the whole-model figures are its own
        blocks.append(_output_block(distribution, own, index))
    return ("<section><h2>Outputs of the delivered model</h2><p class=\"note\">Every value of every verification "
            "sample: how far the result's values lie from the source's. A few tall bars on the right mean a few "
            "outliers; a histogram that slides right as a whole means a shift everywhere.</p>"
            + "".join(blocks) + _more_outputs(len(distributions)) + "</section>")


def _more_outputs(count: int) -> str:
    if count <= MAX_OUTPUTS_DRAWN:
        return ""
    return (f'<p class="note">{count - MAX_OUTPUTS_DRAWN} more outputs are not drawn (the page stays small); '
            "report.json holds their figures under final.distributions.</p>")


def _output_block(distribution: dict, fidelity: dict | None, index: int) -> str:
    quantiles = distribution.get("error_quantiles", {})
    histogram = distribution.get("error_histogram", {})
    markers = [(label, quantiles[key]) for label, key in (("p50", "p50"), ("p99", "p99"))
               if quantiles.get(key) is not None and histogram.get("edges") and quantiles[key] > 0]
    figures = []
    if histogram.get("counts"):
        chart = svg.histogram(histogram["edges"], histogram["counts"], "|result − source|", markers,
                              chart=f"error-histogram-{index}")
        every = distribution.get("every", 1)
        figures.append(f"<figure>{chart}<figcaption>{distribution['values']:,} values"
                       f"{f' (every {every}th)' if every > 1 else ''}; median |error| "
                       f"{number(quantiles.get('p50'))}, p99 {number(quantiles.get('p99'))}, max "
                       f"{number(quantiles.get('max'))}.</figcaption></figure>")
    sample = distribution.get("sample", {})
    if sample.get("source"):
        chart = svg.scatter(sample["source"], sample["result"], "source value", "result value",
                            chart=f"scatter-{index}")
        figures.append(f"<figure>{chart}"
                       f"<figcaption>{len(sample['source'])} sampled values (the largest errors always included); "
                       "on the green line the result equals the source.</figcaption></figure>")
    metrics = _output_metrics(fidelity, distribution)
    shape = "×".join(str(d) for d in distribution.get("shape", []))
    return (f'<div class="output" data-output="{esc(distribution["name"])}"><h3>{esc(distribution["name"])} '
            f'<span class="muted mono">{esc(shape)}</span></h3>{metrics}<div class="figure-row">{"".join(figures)}'
            "</div></div>")


def _output_metrics(fidelity: dict | None, distribution: dict) -> str:
    items = []
    if fidelity:
        if fidelity.get("kind"):
            items.append(("kind", esc(fidelity["kind"]), ""))
        judged, whole = fidelity.get("anchors_judged"), number(fidelity.get("whole_cosine"), 6)
        items.append(("cosine", number(fidelity.get("cosine"), 6),
                      f" at the {judged} anchors holding an object (all: {whole})" if judged else ""))
        items.append(("max-abs", number(fidelity.get("max_abs")), ""))
        if fidelity.get("worst_slice_cosine") is not None:
            items.append(("worst slice", number(fidelity["worst_slice_cosine"], 6),
                          f" (#{fidelity.get('worst_slice')} along axis {fidelity.get('slice_axis')})"))
        if fidelity.get("matched_by"):
            items.append(("paired by", esc(fidelity["matched_by"]), ""))
        for label, key in (("top-1 agreement", "top1_agreement"), ("top-5 containment", "top5_containment"),
                           ("confident top-1", "confident_top1_agreement"),
                           ("decided top-1", "decided_top1_agreement"),
                           ("sequence agreement", "sequence_agreement"), ("exact agreement", "exact_agreement"),
                           ("decision agreement", "decision_agreement")):
            if fidelity.get(key) is not None:
                counted = {"confident_top1_agreement": "confident_samples",
                           "decided_top1_agreement": "decided_samples"}.get(key)
                suffix = f" of {fidelity[counted]}" if counted and fidelity.get(counted) else ""
                items.append((label, f"{fidelity[key]:.1%}", suffix))
    if distribution.get("nonfinite"):
        items.append(("NaN/inf values", f'<span class="bad-text">{distribution["nonfinite"]}</span>', ""))
    cells = "".join(f'<span class="metric"><span class="k">{esc(label)}</span><b>{value}</b>'
                    f'<span class="muted">{esc(suffix)}</span></span>' for label, value, suffix in items)
    return f'<div class="metrics">{cells}</div>' if items else ""


# ---- latency and size ---------------------------------------------------------------------------------------

def _latency_and_size(report: dict) -> str:
    final = report.get("final")
    steps = report.get("steps") or []
    if not final:
        return ""
    figures = []
    latency, source_latency = final.get("latency_ms"), final.get("source_latency_ms")
    rows = [(f"source ({report['source'].get('format', '')})", source_latency, svg.SOURCE),
            (f"result ({final.get('backend', '')})", latency, svg.RESULT)]
    measured = [(label, value, colour, f"{number(value)} ms") for label, value, colour in rows if value is not None]
    if measured:
        figures.append(f"<figure>{svg.bars(measured, 'median latency, batch 1 (ms)', chart='latency')}<figcaption>"
                       "Median over repeated runs on the verification samples. Spread: not measured (the backends "
                       "report a median only).</figcaption></figure>")
    sizes = [(f"source", report["source"].get("bytes") or 0, svg.SOURCE, human_bytes(report["source"].get("bytes")))]
    sizes += [(s["name"], s.get("bytes") or 0, svg.RESULT if i == len(steps) - 1 else svg.CONSIDERED,
               human_bytes(s.get("bytes"))) for i, s in enumerate(steps)]
    figures.append(f"<figure>{svg.bars(sizes, 'size after each step', chart='size')}<figcaption>The artifact's size "
                   "after each step of the chosen route.</figcaption></figure>")
    return f"<section><h2>Latency and size</h2><div class=\"figure-row\">{''.join(figures)}</div></section>"


# ---- quantization sensitivity (when a step reports it) ------------------------------------------------------

KEPT_KEYS = ("higher_precision", "kept_float", "float_layers", "excluded_layers", "nodes_to_exclude")


def _sensitivity_section(report: dict) -> str:
    blocks = []
    for step in report.get("steps") or []:
        notes = step.get("notes") or {}
        if notes.get("ladder"):
            blocks.append(_ladder_table(step["name"], notes["ladder"], notes.get("latency_ms")))
        scores = _layer_scores(notes.get("sensitivity"))
        if not scores:
            continue
        kept = {str(n) for key in KEPT_KEYS for n in (notes.get(key) or []) if isinstance(notes.get(key), list)}
        ranked = sorted(scores.items(), key=lambda item: -item[1])[:40]
        rows = [(layer, value, svg.FAILED if layer in kept else svg.SOURCE,
                 f"{number(value)}{' · kept' if layer in kept else ''}")
                for layer, value in ranked]
        blocks.append(f"<h3>{esc(step['name'])}</h3><figure>"
                      f"{svg.bars(rows, 'sensitivity (as the step measured it)', chart='sensitivity')}"
                      f"<figcaption>The {len(ranked)} most sensitive of {len(scores)} layers; red: kept in higher "
                      f"precision ({len(kept)}).</figcaption></figure>")
    if not blocks:
        return ""
    return "<section><h2>Quantization: ladder and sensitivity</h2>" + "".join(blocks) + "</section>"


def _ladder_table(step: str, ladder: list[dict], latency: dict | None = None) -> str:
    """The rungs a step climbed after its plain result missed the tolerance, each with what it reached, and what
    the rung that passed costs in speed."""
    rows = []
    for rung in ladder:
        options = ", ".join(f"{k}={v}" for k, v in (rung.get("options") or {}).items()) or "plain"
        fidelity = rung.get("fidelity") or {}
        outcome = rung.get("error") or "; ".join(rung.get("violations") or []) or "passed"
        rows.append(f"<tr><td>{esc(options)}</td><td>{number(fidelity.get('cosine'))}</td>"
                    f"<td>{number(fidelity.get('top1_agreement'))}</td><td>{esc(outcome)}</td></tr>")
    speed = (f"<p>The rung that passed runs in {number(latency.get('chosen_rung'))} ms, the plain result in "
             f"{number(latency.get('plain'))} ms ({latency.get('slowdown')}x).</p>" if latency else "")
    return (f"<h3>{esc(step)}: ladder</h3><table><thead><tr><th>rung</th><th>cosine</th><th>top-1</th>"
            f"<th>outcome</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{speed}")


def _layer_scores(value: Any) -> dict[str, float]:
    """`{layer: score}` or `[{layer|name, sensitivity|score|value}]`, as a step's notes may hold it."""
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float))}
    if isinstance(value, list):
        scores = {}
        for item in value:
            if not isinstance(item, dict):
                continue
            layer = item.get("layer", item.get("name"))
            score = next((item[k] for k in ("sensitivity", "score", "value") if isinstance(item.get(k), (int, float))),
                         None)
            if layer is not None and score is not None:
                scores[str(layer)] = float(score)
        return scores
    return {}


# ---- warnings and samples ----------------------------------------------------------------------------

def _warnings_section(report: dict) -> str:
    samples = report.get("samples", {})
    items = [f"<li>{esc(w)}</li>" for w in report.get("warnings", [])]
    origin = f"<p><b>Samples:</b> {esc(samples.get('origin', '?'))}"
    if samples.get("count") is not None:
        origin += f" · {samples['count']} available"
    if samples.get("verification_samples") is not None:
        origin += f" · {samples['verification_samples']} used for verification"
    origin += "</p>"
    details = [f"<details><summary>{esc(f.get('failed_step'))}: library message</summary><pre>{esc(f['detail'])}"
               "</pre></details>" for f in report.get("alternatives_tried", []) if f.get("detail")]
    warnings = f"<ul>{''.join(items)}</ul>" if items else '<p class="muted">No warnings.</p>'
    return f"<section><h2>Warnings and samples</h2>{origin}{warnings}{''.join(details)}</section>"

