"""Terminal rendering for the `hub` command (rich). Progress goes to stderr so stdout stays for results."""
from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from hub.planner import PlannedStep, Route
from hub.platforms import is_prepared, platform_backends
from hub.plugins import install_hint, load_catalog, missing_for
from hub.report import RouteFailure, StepRecord, human_bytes
from hub.verify import Fidelity

WIDE = 160  # when output is not a terminal rich assumes 80 columns, which folds every table


def _console(**options: Any) -> Console:
    console = Console(highlight=False, soft_wrap=True, **options)
    if not console.is_terminal:
        console.width = WIDE
    return console


stdout = _console()


def fidelity_text(fidelity: Fidelity | None) -> str:
    if fidelity is None:
        return "not verified"
    parts = [f"cos {fidelity.cosine:.6f}", f"max-abs {fidelity.max_abs:.3g}"]
    if fidelity.top1_agreement is not None:
        parts.append(f"top-1 {fidelity.top1_agreement:.1%}")
    return "  ".join(parts)


class ConsoleProgress:
    """Live step list: a spinner with elapsed time while a step runs (on a terminal), a line when it ends."""

    def __init__(self) -> None:
        self.console = _console(stderr=True)
        self._status: Any = None
        self._started = 0.0

    def route_started(self, route: Route, attempt: int) -> None:
        label = "route" if attempt == 1 else f"fallback route {attempt}"
        self.console.print(f"[bold]{label}:[/] {' -> '.join(route.names) or '(already there)'}  "
                           f"[dim](cost {route.cost:.3f})[/]")

    def step_started(self, planned: PlannedStep) -> None:
        self._started = time.perf_counter()
        if self.console.is_terminal:
            self._status = self.console.status(f"{planned.name}  {planned.source} -> {planned.result}")
            self._status.start()

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def step_finished(self, record: StepRecord) -> None:
        self._stop_status()
        cached = " [dim](cached)[/]" if record.cached else ""
        rung = record.notes.get("rung")
        if rung:
            cached += " [dim](ladder: " + ", ".join(f"{k}={v}" for k, v in rung.items()) + ")[/]"
        self.console.print(f"  [green]✓[/] {record.name:<26} {record.seconds:6.1f} s  {record.state:<24} "
                           f"{human_bytes(record.bytes):>9}  {fidelity_text(record.fidelity)}{cached}")

    def route_failed(self, failure: RouteFailure) -> None:
        self._stop_status()
        self.console.print(f"  [red]✗[/] {failure.step}: {failure.reason}")

    def measuring(self, what: str) -> None:
        self.console.print(f"  measuring {what} …")


def _ratio(new: float | None, old: float | None) -> str:
    if not new or not old:
        return ""
    return f" ({new / old:.2f}x)"


def print_conversion(result: Any) -> None:
    report = result.report
    final = report.final
    table = Table(title=f"{report.source['path']} -> {report.target['name']}", show_header=True)
    table.add_column("")
    table.add_column("source")
    table.add_column("result")
    table.add_row("state", report.source["state"], final.state)
    table.add_row("size", human_bytes(report.source["bytes"]),
                  human_bytes(final.bytes) + _ratio(final.bytes, report.source["bytes"]))
    latency = f"{final.latency_ms:.3f} ms" if final.latency_ms else "-"
    if final.latency_ms and final.source_latency_ms:
        speedup = final.source_latency_ms / final.latency_ms
        latency += f" ({speedup:.1f}x faster)" if speedup >= 1 else f" ({1 / speedup:.1f}x slower)"
    table.add_row("latency (batch 1)", f"{final.source_latency_ms:.3f} ms" if final.source_latency_ms else "-",
                  f"{latency} on {final.backend}")
    table.add_row("fidelity", f"{report.samples['origin']}", fidelity_text(final.fidelity))
    stdout.print(table)
    for check in final.platform_checks:
        print_platform_check(check)
    for failure in report.alternatives_tried:
        stdout.print(f"[yellow]fell back:[/] {' -> '.join(failure.route)} failed at {failure.step}: {failure.reason}")
    for warning in report.warnings:
        stdout.print(f"[yellow]warning:[/] {warning}")
    stdout.print(f"wrote {result.path}, {result.path.parent / 'report.json'} and {result.path.parent / 'report.html'}")


def print_platform_check(check: Any) -> None:
    verdict = "[green]matches[/]" if check.matches else f"[red]differs[/]: {check.first_mismatch}"
    kind = "byte for byte" if check.exact else f"within rtol 1e-4 (max-abs {check.max_abs:.3g})"
    stdout.print(f"{check.platform} ({check.backend}) vs {check.reference_backend}: {verdict}, {kind}, "
                 f"{check.samples} samples; {check.emulated_ms_per_inference:.2f} ms per inference there "
                 f"(emulated: not comparable with native times)")
    stdout.print(f"  runtime: {check.runtime}")


def print_dry_run(report: Any) -> None:
    stdout.print(f"dry run: {report.source['path']} ({report.source['state']}) -> {report.target['name']}")
    stdout.print("inputs: " + ", ".join(f"{i['name']} {i['shape']} {i['dtype']}" for i in report.source["inputs"]))
    for index, route in enumerate(report.planned):
        stdout.print(f"{'route' if index == 0 else 'alternative'}: "
                     + " -> ".join(s["name"] for s in route["steps"]) + f"  (cost {route['cost']})")
    for warning in report.warnings:
        stdout.print(f"[yellow]warning:[/] {warning}")
    stdout.print("nothing was run or written")


def print_plan(result: Any) -> None:
    stdout.print(f"{result.source.path} is {result.source.state} ({human_bytes(result.source.bytes)}); "
                 f"target {result.target.name} needs {result.target.requires.describe()} "
                 f"on backend {result.target.backend}; prefer={result.prefer}")
    for index, route in enumerate(result.routes):
        title = "chosen route" if index == 0 else f"alternative {index}"
        table = Table(title=f"{title}: cost {route.cost:.3f}", title_justify="left")
        for column in ("step", "plugin", "kind", "from -> to", "est. s", "fidelity loss", "size ratio", "cost"):
            table.add_column(column)
        for planned in route.steps:
            table.add_row(planned.name, planned.plugin, planned.kind, f"{planned.source} -> {planned.result}",
                          f"{planned.seconds:.1f}", f"{planned.step.fidelity_loss:g}",
                          f"{planned.step.size_ratio:g}", f"{planned.cost:.3f}")
        if not route.steps:
            table.add_row("(none: the source already satisfies the target)", "", "", "", "", "", "", "0")
        stdout.print(table)
        for planned in route.steps:
            if planned.step.ladder:
                rungs = ["; ".join(f"{k}={v}" for k, v in rung.items()) for rung in planned.step.ladder]
                stdout.print(f"  if {planned.name} misses the tolerance, it climbs: " + " -> ".join(rungs))


def print_targets() -> None:
    catalog = load_catalog()
    table = Table(show_header=True)
    for column in ("target", "backend", "requires", "usable here", "declared by"):
        table.add_column(column)
    for name in sorted(catalog.targets):
        target = catalog.targets[name]
        backend = catalog.backends.get(target.backend)
        broken = catalog.broken_owner(target.backend)
        if backend is None:
            usable = (f"no: backend {target.backend!r} is from broken plugin {broken.name!r}" if broken
                      else f"no: no plugin provides backend {target.backend!r}")
        else:
            missing = missing_for(backend, catalog)
            usable = f"no: {install_hint(backend.extra, missing)}" if missing else "yes"
        table.add_row(name, target.backend, target.requires.describe(), usable, catalog.owner.get(name, "?"))
    stdout.print(table)
    for name in sorted(catalog.targets):
        stdout.print(f"  {name}: {catalog.targets[name].description}")
    for backend in platform_backends(catalog):
        missing = missing_for(backend, catalog)
        if missing:
            status = f"unavailable: {install_hint(backend.extra, missing)}"
        elif is_prepared(backend):
            status = "ready"
        else:
            status = f"not prepared yet: `hub env create {backend.platform}` (or the first --check-on does it)"
        stdout.print(f"platform check --check-on {backend.platform}: {backend.name} "
                     f"({', '.join(sorted(backend.formats))}): {status}")


def plugins_json() -> list[dict]:
    catalog = load_catalog()
    rows = []
    for record in catalog.plugins:
        declared = record.formats + record.steps + record.backends
        missing = [] if record.error else sorted({m for d in declared for m in missing_for(d, catalog)})
        extras = sorted({d.extra for d in declared if getattr(d, "extra", None)})
        rows.append({
            "name": record.name, "module": record.module, "origin": record.origin, "error": record.error,
            "formats": [f.name for f in record.formats], "converters": [s.name for s in record.converters],
            "compressors": [s.name for s in record.compressors], "backends": [b.name for b in record.backends],
            "targets": [t.name for t in record.targets], "missing": missing,
            "install": install_hint(extras[0] if len(extras) == 1 else None, missing) if missing else None,
            "requests": sorted({r.name for s in record.steps for r in _tuple(s.satisfies)}),
            "options": {s.name: [_option_json(o) for o in _tuple(s.options)] for s in record.steps},
        })
    return rows


def _tuple(value: Any) -> tuple:
    return value if isinstance(value, tuple) else ()  # a broken plugin's declaration may hold anything


def _option_json(option: Any) -> dict:
    type_name = getattr(getattr(option, "type", None), "__name__", repr(getattr(option, "type", None)))
    return {"name": getattr(option, "name", repr(option)), "type": type_name,
            "default": getattr(option, "default", None), "doc": getattr(option, "doc", ""),
            "path": getattr(option, "path", False)}


def print_plugins(verbose: bool = False) -> None:
    for row in plugins_json():
        status = "[red]broken[/]" if row["error"] else ("[yellow]partly unavailable[/]" if row["missing"] else "ok")
        stdout.print(f"[bold]{row['name']}[/] ({row['origin']}, {row['module']}): {status}", highlight=False)
        for kind in ("formats", "converters", "compressors", "backends", "targets", "requests"):
            if row[kind]:
                stdout.print(f"    {kind}: {', '.join(row[kind])}", highlight=False)
        if row["error"]:
            stdout.print(f"    error: {row['error']}", highlight=False, markup=False)
        if row["missing"]:
            stdout.print(f"    missing: {', '.join(row['missing'])} -> {row['install']}", highlight=False)
        if verbose:
            for step, options in row["options"].items():
                for option in options:
                    path = ", a file" if option["path"] else ""
                    stdout.print(f"    {step} {option['name']} ({option['type']}{path}, default "
                                 f"{option['default']!r}): {option['doc']}", highlight=False, markup=False)
    if verbose:
        catalog = load_catalog()
        stdout.print("[bold]compression requests[/] (--compress NAME[:VALUE]):")
        for name, request in sorted(catalog.requests.items()):
            value = f":{request.option.upper()}" if request.option else ""
            stdout.print(f"    {name}{value}: {request.attribute} {request.value}; {request.description}",
                         highlight=False, markup=False)


def print_inspection(source: Any, info: Any) -> None:
    stdout.print(f"{source.path}: {source.format.name} ({source.state}), {human_bytes(source.bytes)}"
                 + (f", {info.parameters:,} parameters" if info.parameters is not None else ""))
    for label, tensors in (("input", info.inputs), ("output", info.outputs)):
        for tensor in tensors:
            shape = "x".join("?" if d is None else str(d) for d in tensor.shape)
            stdout.print(f"  {label:<6} {tensor.name:<24} {shape:<20} {tensor.dtype}")
    for note in info.notes:
        stdout.print(f"  note: {note}")
