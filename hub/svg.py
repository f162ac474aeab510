"""Small inline-SVG charts for the HTML report: no library, no script, no external resource.

Every chart is a string holding one `<svg>` element that scales to its container (viewBox) and carries its
colours as attributes, so it reads the same inside the report, printed, or saved alone. Hover text is SVG
`<title>`, which browsers show as a tooltip without JavaScript.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Sequence

# colour carries meaning, the same in every chart: blue the source, orange the result, green what passed or
# was chosen, red what failed or a bound, grey what was only considered (a colour-blind-safe pairing)
SOURCE = "#2c6fb7"
RESULT = "#e07b00"
PASSED = "#1b8a5a"
FAILED = "#c62828"
CONSIDERED = "#9aa3ad"
INK = "#1f2933"
MUTED = "#616e7c"
GRID = "#e4e7eb"
SERIES = ("#2c6fb7", "#e07b00", "#7b3fa0", "#1b8a5a", "#b5475a", "#4d7c8a")
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif\""

WIDTH, HEIGHT = 560, 250
LEFT, RIGHT, TOP, BOTTOM = 64, 18, 14, 44


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def number(value: float | None, digits: int = 3) -> str:
    """A compact number for labels: 0.00123 -> 1.23e-03, 12345 -> 1.23e+04, 0.5 -> 0.5."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if float(value).is_integer() and 1 <= abs(value) < 1e6:
        return str(int(value))
    exponent = math.log10(abs(value))
    if exponent == int(exponent) and not -3 < exponent < 4:  # a small or large power of ten, as on a log axis
        return f"{'-' if value < 0 else ''}1e{int(exponent)}"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.{digits}g}"
    return f"{value:.{max(digits - 1, 1)}e}"


@dataclass(frozen=True)
class Axis:
    """Maps data values in [low, high] to pixels in [start, end], linearly or on a log10 scale."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    def _t(self, value: float) -> float:
        if self.log:
            return math.log10(max(value, self.low))
        return value

    def at(self, value: float) -> float:
        low, high = self._t(self.low), self._t(self.high)
        span = (high - low) or 1.0
        return self.start + (self._t(value) - low) / span * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        if self.log:
            first, last = math.floor(math.log10(self.low)), math.ceil(math.log10(self.high))
            step = max(1, math.ceil((last - first) / count))
            return [10.0 ** e for e in range(first, last + 1, step) if self.low <= 10.0 ** e <= self.high * 1.0001]
        return nice_ticks(self.low, self.high, count)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def padded(low: float, high: float, fraction: float = 0.05) -> tuple[float, float]:
    if high <= low:
        margin = abs(high) * 0.1 or 1.0
        return low - margin, high + margin
    margin = (high - low) * fraction
    return low - margin, high + margin


def document(body: str, width: int = WIDTH, height: int = HEIGHT, label: str = "", chart: str = "") -> str:
    marker = f' data-chart="{esc(chart)}"' if chart else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{esc(label)}"{marker} {FONT} font-size="12" fill="{INK}" '
            f'style="width:100%;max-width:{width}px;height:auto">{body}</svg>')


def text(x: float, y: float, content: object, anchor: str = "start", size: int = 12, colour: str = INK,
         weight: str = "normal", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{colour}" '
            f'font-weight="{weight}"{extra}>{esc(content)}</text>')


def frame(x_axis: Axis, y_axis: Axis, x_label: str, y_label: str, x_ticks: bool = True,
          span: tuple[float, float] | None = None) -> str:
    """Grid lines, tick labels and axis titles for a plot area (`span`: its left and right when wider than the
    x axis, as for named steps inset from the edges)."""
    left, right = span or (x_axis.start, x_axis.end)
    parts = []
    for value in y_axis.ticks():
        y = y_axis.at(value)
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(text(left - 6, y + 4, number(value), "end", 11, MUTED))
    if x_ticks:
        for value in x_axis.ticks():
            x = x_axis.at(value)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y_axis.end}" y2="{y_axis.start}" stroke="{GRID}"/>')
            parts.append(text(x, y_axis.start + 15, number(value), "middle", 11, MUTED))
    parts.append(f'<line x1="{left}" x2="{right}" y1="{y_axis.start}" y2="{y_axis.start}" '
                 f'stroke="{MUTED}"/>')
    parts.append(text((x_axis.start + x_axis.end) / 2, y_axis.start + 34, x_label, "middle", 12, MUTED))
    middle = (y_axis.start + y_axis.end) / 2
    parts.append(text(14, middle, y_label, "middle", 12, MUTED, extra=f' transform="rotate(-90 14 {middle:.1f})"'))
    return "".join(parts)


def histogram(edges: Sequence[float], counts: Sequence[int], x_label: str, markers: Sequence[tuple[str, float]] = (),
              colour: str = RESULT, chart: str = "histogram") -> str:
    """Bars over [edges[i], edges[i+1]); counts on a log scale so that a handful of outliers stays visible."""
    x_axis = Axis(edges[0], edges[-1], LEFT, WIDTH - RIGHT)
    top = max(max(counts, default=1), 1)
    y_axis = Axis(1, 10 ** math.ceil(math.log10(top * 1.2)), HEIGHT - BOTTOM, TOP, log=True)
    parts = [frame(x_axis, y_axis, x_label, "values (log)")]
    baseline = y_axis.start
    for low, high, count in zip(edges, edges[1:], counts):
        if not count:
            continue
        x0, x1, y = x_axis.at(low), x_axis.at(high), y_axis.at(max(count, 1))
        height = max(baseline - y, 1.5)
        parts.append(f'<rect x="{x0 + 0.5:.1f}" y="{baseline - height:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                     f'height="{height:.1f}" fill="{colour}"><title>{count} values with |error| in '
                     f'[{number(low)}, {number(high)})</title></rect>')
    for label, value in markers:
        x = x_axis.at(value)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{baseline}" stroke="{INK}" '
                     f'stroke-dasharray="3 3"/>')
        parts.append(text(x + 3, TOP + 10, label, "start", 11, INK))
    return document("".join(parts), label=f"histogram of {x_label}", chart=chart)


def scatter(xs: Sequence[float], ys: Sequence[float], x_label: str, y_label: str, chart: str = "scatter") -> str:
    """Points against the diagonal y = x: on the line, the result equals the source."""
    low, high = padded(min(min(xs), min(ys)), max(max(xs), max(ys)))
    size = 300
    x_axis = Axis(low, high, LEFT, size - RIGHT)
    y_axis = Axis(low, high, size - BOTTOM, TOP)
    parts = [frame(x_axis, y_axis, x_label, y_label)]
    parts.append(f'<line x1="{x_axis.at(low):.1f}" y1="{y_axis.at(low):.1f}" x2="{x_axis.at(high):.1f}" '
                 f'y2="{y_axis.at(high):.1f}" stroke="{PASSED}" stroke-width="1.2"/>')
    dots = "".join(f'<circle cx="{x_axis.at(x):.1f}" cy="{y_axis.at(y):.1f}" r="2.2"/>' for x, y in zip(xs, ys))
    parts.append(f'<g fill="{RESULT}" fill-opacity="0.55">{dots}</g>')
    return document("".join(parts), size, size, label=f"{y_label} against {x_label}", chart=chart)


def lines(categories: Sequence[str], series: Sequence[tuple[str, Sequence[float | None], str]], y_label: str,
          bound: tuple[str, float] | None = None, log: bool = False, chart: str = "lines") -> str:
    """One line per series over named steps; a dashed red bound (a tolerance) when given."""
    values = [v for _, points, _ in series for v in points if v is not None and (v > 0 or not log)]
    if bound is not None:
        values.append(bound[1])
    if not values:
        values = [1.0]
    height = HEIGHT - 30 + (16 if len(series) > 1 else 0)
    bottom = height - 40 - (16 if len(series) > 1 else 0)
    if log:
        y_axis = Axis(10 ** math.floor(math.log10(min(values))), 10 ** math.ceil(math.log10(max(values) * 1.01)),
                      bottom, TOP, log=True)
    else:
        low, high = padded(min(values), max(values), 0.08)
        y_axis = Axis(low, min(high, 1.0) if max(values) <= 1.0 and min(values) > 0.5 else high,
                      bottom, TOP)
    inset = 62 if len(categories) > 1 else (WIDTH - LEFT - RIGHT) / 2
    x_axis = Axis(0, max(len(categories) - 1, 1), LEFT + inset, WIDTH - RIGHT - inset)
    parts = [frame(x_axis, y_axis, "", y_label, x_ticks=False, span=(LEFT, WIDTH - RIGHT))]
    spacing = (x_axis.end - x_axis.start) / max(len(categories) - 1, 1)
    staggered = len(categories) > 1 and spacing < 125  # crowded names alternate between two lines
    for index, name in enumerate(categories):
        x = x_axis.at(index)
        y = y_axis.start + 16 + (13 if staggered and index % 2 else 0)
        parts.append(text(x, y, _clip(name, int(spacing * (2 if staggered else 1) / 6.4)), "middle", 11, MUTED))
    if bound is not None:
        y = y_axis.at(bound[1])
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{FAILED}" '
                     f'stroke-dasharray="6 4" stroke-width="1.5"/>')
        parts.append(text(WIDTH - RIGHT, y - 5, bound[0], "end", 11, FAILED))
    for name, points, colour in series:
        placed = [(x_axis.at(i), y_axis.at(v)) for i, v in enumerate(points) if v is not None and (v > 0 or not log)]
        if len(placed) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in placed)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (x, y), (i, v) in zip(placed, [(i, v) for i, v in enumerate(points)
                                             if v is not None and (v > 0 or not log)]):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{esc(name)} after '
                         f'{esc(categories[i])}: {number(v, 6)}</title></circle>')
    if len(series) > 1:
        for index, (name, _, colour) in enumerate(series):
            x = LEFT + 10 + index * 150
            parts.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{colour}"/>')
            parts.append(text(x + 14, height - 5, _clip(name, 20), "start", 11, MUTED))
    return document("".join(parts), WIDTH, height, label=y_label, chart=chart)


def bars(rows: Sequence[tuple[str, float, str, str]], x_label: str, chart: str = "bars",
         log: bool = False) -> str:
    """Horizontal bars: (label, value, colour, value text) per row."""
    row_height = 26
    label_width = 190
    height = TOP + row_height * len(rows) + 36
    top = max((value for _, value, _, _ in rows), default=1.0) or 1.0
    low = min((v for _, v, _, _ in rows if v > 0), default=1.0)
    room = max((len(shown) for _, _, _, shown in rows), default=8) * 6.6 + 12  # for the value after the bar
    x_axis = Axis(low / 2 if log else 0.0, top, label_width, WIDTH - RIGHT - room, log=log)
    parts = []
    for index, (label, value, colour, shown) in enumerate(rows):
        y = TOP + index * row_height
        end = x_axis.at(max(value, x_axis.low))
        parts.append(text(label_width - 8, y + 16, _clip(label, 28), "end", 12, INK))
        parts.append(f'<rect x="{label_width}" y="{y + 4}" width="{max(end - label_width, 1):.1f}" height="16" '
                     f'fill="{colour}" rx="2"><title>{esc(label)}: {esc(shown)}</title></rect>')
        parts.append(text(end + 6, y + 16, shown, "start", 12, INK))
    parts.append(text((label_width + WIDTH - RIGHT) / 2, height - 8, x_label, "middle", 12, MUTED))
    return document("".join(parts), WIDTH, height, label=x_label, chart=chart)


def _clip(value: str, length: int) -> str:
    return value if len(value) <= length else value[:length - 1] + "…"
