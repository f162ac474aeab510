"""The planning graph as SVG: states are nodes, steps are edges, routes are paths through them.

A layered layout, top to bottom: a state's layer is its longest distance in steps from the source, and the
chosen route runs straight down the first column. The chosen route is green; a failed route is red at the
step where it failed (its reason on hover) and dark where its steps ran; routes only considered are grey and
dashed; every step's cost terms are on hover. Fed by report or plan JSON only (`planned_routes` / `routes`), so
`hub plan --graph` and `hub report` draw the same picture.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from hub.svg import CONSIDERED, FAILED, FONT, INK, MUTED, PASSED, SOURCE, esc, number, text

SLOT, LAYER = 290, 104  # horizontal distance between states of one layer, vertical between layers
NODE_WIDTH, NODE_HEIGHT = 210, 36
MARGIN = 24
LEFT_MARGIN = 150  # room for the label of a parallel step, which bends to the left of the first column
RAN = "#52606d"

CHOSEN, FAILED_HERE, RAN_OK, CONSIDERED_ONLY = "chosen", "failed", "ran", "considered"
PRIORITY = {CHOSEN: 0, FAILED_HERE: 1, RAN_OK: 2, CONSIDERED_ONLY: 3}
STYLE = {  # status -> (colour, width, dash)
    CHOSEN: (PASSED, 3.2, ""),
    FAILED_HERE: (FAILED, 2.6, ""),
    RAN_OK: (RAN, 1.8, ""),
    CONSIDERED_ONLY: (CONSIDERED, 1.3, "5 4"),
}


@dataclass
class Edge:
    source: str
    result: str
    name: str
    status: str = CONSIDERED_ONLY
    terms: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


def route_statuses(planned: Sequence[dict], chosen: Sequence[str] | None, failures: Sequence[dict]
                   ) -> list[tuple[dict, str, dict | None]]:
    """Each planned route with what became of it: "chosen", "failed" (with its failure) or "considered"."""
    failed = {tuple(f.get("route", [])): f for f in failures}
    rows = []
    for route in planned:
        names = tuple(s["name"] for s in route.get("steps", []))
        if chosen is not None and names == tuple(chosen):
            rows.append((route, CHOSEN, None))
        elif names in failed:
            rows.append((route, FAILED_HERE, failed[names]))
        else:
            rows.append((route, CONSIDERED_ONLY, None))
    return rows


def _edges(planned: Sequence[dict], chosen: Sequence[str] | None, failures: Sequence[dict]) -> dict[tuple, Edge]:
    edges: dict[tuple, Edge] = {}
    for route, status, failure in route_statuses(planned, chosen, failures):
        failed_at = failure.get("failed_step") if failure else None
        reached_failure = False
        for step in route.get("steps", []):
            key = (step["from"], step["to"], step["name"])
            edge = edges.setdefault(key, Edge(step["from"], step["to"], step["name"], terms=step))
            here = status
            if status == FAILED_HERE:
                if reached_failure:
                    here = CONSIDERED_ONLY
                elif step["name"] == failed_at:
                    reached_failure = True
                    edge.reasons.append(failure.get("reason", ""))
                else:
                    here = RAN_OK
            if PRIORITY[here] < PRIORITY[edge.status]:
                edge.status = here
    return edges


def _layers(source: str, edges: Sequence[Edge]) -> dict[str, int]:
    """Each state's layer: its longest distance in steps from the source along the routes, so every step
    points down (states on a cycle, which simple paths can still form together, keep their first layer)."""
    depth = {source: 0}
    for _ in range(len(edges) + 1):
        changed = False
        for edge in edges:
            if edge.source in depth and depth.get(edge.result, -1) < depth[edge.source] + 1 \
                    and depth[edge.source] + 1 <= len(edges):
                depth[edge.result] = depth[edge.source] + 1
                changed = True
        if not changed:
            break
    for edge in edges:  # a state the routes never reach from the source (not expected)
        depth.setdefault(edge.source, 0)
        depth.setdefault(edge.result, depth[edge.source] + 1)
    return depth


def _leading_states(planned: Sequence[dict], chosen: Sequence[str] | None, failures: Sequence[dict]) -> list[str]:
    """The states of the route the picture is about: the chosen one, else the first that failed (up to its
    failing step)."""
    rows = route_statuses(planned, chosen, failures)
    leading = next((r for r in rows if r[1] == CHOSEN), None) or next((r for r in rows if r[1] == FAILED_HERE), None)
    if leading is None or not leading[0].get("steps"):
        return []
    route, _, failure = leading
    states = [route["steps"][0]["from"]]
    for step in route["steps"]:
        states.append(step["to"])
        if failure and step["name"] == failure.get("failed_step"):
            break
    return states


def _positions(source: str, edges: list[Edge], depth: dict[str, int], leading: Sequence[str]
               ) -> dict[str, tuple[float, float]]:
    """The source and the leading route's states take the first column, so it reads as a straight line down;
    other states fill the columns to its right in the order of their routes' outcome (failed before considered)."""
    seen: list[str] = [source, *[s for s in leading if s != source]]
    for edge in sorted(edges, key=lambda e: PRIORITY[e.status]):
        for state in (edge.source, edge.result):
            if state not in seen:
                seen.append(state)
    taken: dict[int, set[int]] = {}
    placed = {}
    for state in seen:
        layer = depth[state]
        slot = 0 if state == source or state in leading else 1
        while slot in taken.setdefault(layer, set()):
            slot += 1
        taken[layer].add(slot)
        placed[state] = (LEFT_MARGIN + slot * SLOT, MARGIN + layer * LAYER)
    return placed


def route_graph_svg(source_state: str, planned: Sequence[dict], chosen: Sequence[str] | None = None,
                    failures: Sequence[dict] = (), standalone: bool = False) -> str:
    """The planning graph of these routes (plan or report JSON). chosen: the step names of the route that won
    (None when none did); failures: `alternatives_tried` entries, each marked at its failing step."""
    edges = list(_edges(planned, chosen, failures).values())
    depth = _layers(source_state, edges)
    where = _positions(source_state, edges, depth, _leading_states(planned, chosen, failures))
    goals = {route["steps"][-1]["to"] for route in planned if route.get("steps")}
    on_chosen = {e.source for e in edges if e.status == CHOSEN} | {e.result for e in edges if e.status == CHOSEN}
    width = max(x for x, _ in where.values()) + NODE_WIDTH + MARGIN
    width = max(width, 660)  # room for the legend
    height = max(y for _, y in where.values()) + NODE_HEIGHT + MARGIN + 52
    parallel: dict[tuple[str, str], int] = {}
    body = [_markers()]
    drawn = []
    for edge in sorted(edges, key=lambda e: PRIORITY[e.status]):  # the chosen step of parallel ones runs straight
        index = parallel.get((edge.source, edge.result), 0)
        parallel[(edge.source, edge.result)] = index + 1
        blocked = _blocked(where[edge.source], where[edge.result], where.values())
        drawn.append(_edge(edge, where[edge.source], where[edge.result], index, blocked))
    body += reversed(drawn)  # and is drawn last, on top
    for state, (x, y) in where.items():
        body.append(_node(state, x, y, state == source_state, state in goals, state in on_chosen))
    body.append(_legend(MARGIN, height - 30, {e.status for e in edges}))
    if standalone:  # a file opened alone, in a viewer that may be dark
        body.insert(0, f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    style = "" if standalone else f' style="width:100%;max-width:{width}px;height:auto"'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="planning graph" data-chart="route-graph" {FONT} '
            f'font-size="12"{style}>{"".join(body)}</svg>').encode("ascii", "xmlcharrefreplace").decode("ascii")


def _markers() -> str:
    parts = []
    for status, (colour, _, _) in STYLE.items():
        parts.append(f'<marker id="hub-arrow-{status}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                     f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/>'
                     f'</marker>')
    return f"<defs>{''.join(parts)}</defs>"


def _blocked(start: tuple[float, float], end: tuple[float, float], states: Any) -> bool:
    """Whether a state box lies between two states on the straight line joining them."""
    (x0, y0), (x1, y1) = start, end
    for x, y in states:
        if y0 < y < y1:
            at = x0 + (x1 - x0) * (y - y0) / (y1 - y0)  # where the line crosses that state's layer
            if abs(at - x) < NODE_WIDTH:  # (both left edges) the line or its label would cross that box
                return True
    return False


def _edge(edge: Edge, start: tuple[float, float], end: tuple[float, float], index: int, blocked: bool) -> str:
    colour, width, dash = STYLE[edge.status]
    (x0, y0), (x1, y1) = start, end
    bend = 100.0 * ((index + 1) // 2) * (-1 if index % 2 else 1)  # parallel steps fan out: 0, -100, +100, ...
    if y1 > y0:
        sx, sy, ex, ey = x0 + NODE_WIDTH / 2, y0 + NODE_HEIGHT, x1 + NODE_WIDTH / 2, y1
        cx, cy = (sx + ex) / 2 + bend * 2, (sy + ey) / 2  # the label sits halfway: at the centre + bend
        if blocked:  # skipping a layer with a state in the way: arc beside it
            cx = max(sx, ex) + NODE_WIDTH * 0.62 + abs(bend)
    else:  # the same layer or upwards (a cycle): a loop to the right
        sx, sy, ex, ey = x0 + NODE_WIDTH, y0 + NODE_HEIGHT / 2, x1 + NODE_WIDTH, y1 + NODE_HEIGHT / 2 + 8
        cx, cy = max(sx, ex) + 70 + abs(bend), (sy + ey) / 2
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    t = 0.5 if abs(sx - ex) < 1 else 0.64  # a slanted step's label nearer its end, clear of its neighbours'
    label_x = (1 - t) ** 2 * sx + 2 * (1 - t) * t * cx + t * t * ex
    label_y = (1 - t) ** 2 * sy + 2 * (1 - t) * t * cy + t * t * ey + 4
    tip = esc(_tooltip(edge))
    mark = "✗ " if edge.status == FAILED_HERE else ""
    label = mark + edge.name
    label_colour = colour if edge.status in (CHOSEN, FAILED_HERE) else (INK if edge.status == RAN_OK else MUTED)
    return (f'<g class="edge edge-{edge.status}" data-step="{esc(edge.name)}"><title>{tip}</title>'
            f'<path d="M{sx:.1f},{sy:.1f} Q{cx:.1f},{cy:.1f} {ex:.1f},{ey - 2:.1f}" fill="none" stroke="{colour}" '
            f'stroke-width="{width}"{dashes} marker-end="url(#hub-arrow-{edge.status})"/>'
            f'<rect x="{label_x - len(label) * 3.4 - 5:.1f}" y="{label_y - 12:.1f}" '
            f'width="{len(label) * 6.8 + 10:.1f}" height="17" rx="3" fill="#ffffff" fill-opacity="0.92"/>'
            + text(label_x, label_y, label, "middle", 11.5, label_colour,
                   "bold" if edge.status in (CHOSEN, FAILED_HERE) else "normal") + "</g>")


def _tooltip(edge: Edge) -> str:
    terms = edge.terms
    lines = [f"{edge.name} ({terms.get('plugin', '?')} {terms.get('kind', '')}): {edge.source} -> {edge.result}",
             f"status: {edge.status}"]
    if "cost" in terms:
        lines.append(f"cost {number(terms['cost'], 4)} = expected {number(terms.get('expected_seconds'))} s, "
                     f"fidelity loss {number(terms.get('fidelity_loss'))}, size ratio {number(terms.get('size_ratio'))}"
                     " (weighted, plus a hop)")
    lines += [f"failed: {reason}" for reason in edge.reasons]
    return "\n".join(lines)


def _node(state: str, x: float, y: float, is_source: bool, is_goal: bool, on_chosen: bool) -> str:
    colour = SOURCE if is_source else (PASSED if on_chosen else MUTED)
    fill = "#eef4fb" if is_source else ("#eaf6f0" if on_chosen else "#ffffff")
    role = "source" if is_source else ("meets the target" if is_goal else "intermediate state")
    outer = (f'<rect x="{x - 3}" y="{y - 3}" width="{NODE_WIDTH + 6}" height="{NODE_HEIGHT + 6}" rx="8" '
             f'fill="none" stroke="{colour}" stroke-width="1"/>') if is_goal else ""
    label = state if len(state) <= 30 else state[:29] + "…"
    return (f'<g class="state" data-state="{esc(state)}"><title>{esc(state)} ({role})</title>{outer}'
            f'<rect x="{x}" y="{y}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6" fill="{fill}" '
            f'stroke="{colour}" stroke-width="{2 if on_chosen or is_source else 1.2}"/>'
            + text(x + NODE_WIDTH / 2, y + NODE_HEIGHT / 2 + 4, label, "middle", 12, INK,
                   "bold" if is_source else "normal") + "</g>")


def _legend(x: float, y: float, shown: set[str]) -> str:
    items = [(label, status) for label, status in (("chosen route", CHOSEN), ("failed step", FAILED_HERE),
                                                  ("ran, then route failed", RAN_OK),
                                                  ("considered, not run", CONSIDERED_ONLY)) if status in shown]
    parts = []
    for label, status in items:
        colour, width, dash = STYLE[status]
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<line x1="{x}" x2="{x + 26}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" '
                     f'stroke-width="{width}"{dashes}/>')
        parts.append(text(x + 32, y, label, "start", 11, MUTED))
        x += 46 + len(label) * 6.4
    parts.append(text(MARGIN, y + 18, "double border: a state that meets the target · hover a step for its cost "
                      "terms or its failure", "start", 11, MUTED))
    return "".join(parts)
