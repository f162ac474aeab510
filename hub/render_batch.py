"""Terminal rendering of `hub batch`: a live view of the jobs while they run (stderr), the release table at the
end (stdout): one row per model, one column per target, each cell size, latency and fidelity or the reason."""
from __future__ import annotations

import time
from typing import Any

from rich.live import Live
from rich.table import Table
from rich.text import Text

from hub.batching import BatchResult, Job, JobOutcome
from hub.render import _console, stdout
from hub.report import human_bytes

REASON_CHARS = 90  # the table shows the start of a failure's reason; batch.json and batch.csv keep all of it


class ConsoleBatchProgress:
    """On a terminal: a live table of the running jobs and their current step, with counts and an ETA. Elsewhere
    (CI logs): one line per finished job."""

    def __init__(self) -> None:
        self.console = _console(stderr=True)
        self.live: Any = None
        self.total = self.reused = self.done = self.failed = 0
        self.workers = 1
        self.running: dict[str, tuple[str, float]] = {}
        self.started = time.monotonic()

    def planned(self, total: int, reused: int, workers: int) -> None:
        self.total, self.reused, self.workers = total, reused, max(workers, 1)
        self.started = time.monotonic()
        if reused:
            self.console.print(f"{reused} of {total} jobs unchanged since they finished: taken from the journal")
        if self.console.is_terminal and total > reused:
            self.live = Live(self._view(), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def job_started(self, job: Job) -> None:
        self.running[job.id] = ("starting", time.monotonic())
        self._refresh()

    def job_step(self, job: Job, step: str) -> None:
        self.running[job.id] = (step, self.running.get(job.id, ("", time.monotonic()))[1])
        self._refresh()

    def job_finished(self, job: Job, outcome: JobOutcome) -> None:
        self.running.pop(job.id, None)
        self.done += 1
        self.failed += not outcome.ok
        text = "ok" if outcome.ok else f"[red]failed[/]: {outcome.reason}"
        self.console.print(f"[{self.done}/{self.total - self.reused}] {job.id}: {text}  [dim]{outcome.seconds:.1f} s[/]")
        self._refresh()
        if self.live is not None and self.done >= self.total - self.reused:
            self.live.stop()
            self.live = None

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._view())

    def eta_seconds(self) -> float | None:
        remaining = self.total - self.reused - self.done
        if not self.done or remaining <= 0:
            return None
        return (time.monotonic() - self.started) / self.done * remaining

    def _view(self) -> Table:
        eta = self.eta_seconds()
        title = (f"done {self.done}/{self.total - self.reused}  running {len(self.running)}  failed {self.failed}"
                 f"  ETA {'-' if eta is None else f'{eta:.0f} s'}")
        table = Table(title=title, title_justify="left", show_edge=False)
        table.add_column("job")
        table.add_column("step")
        table.add_column("elapsed", justify="right")
        now = time.monotonic()
        for job_id, (step, since) in sorted(self.running.items()):
            table.add_row(job_id, step, f"{now - since:.0f} s")
        return table

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def cell_text(outcome: JobOutcome) -> Text:
    if not outcome.ok:
        reason = (outcome.reason or "unknown").strip().splitlines()[0]
        short = reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 3] + "..."
        return Text(f"failed: {short}", style="red")
    parts = [human_bytes(outcome.bytes)]
    parts.append("-" if outcome.latency_ms is None else f"{outcome.latency_ms:.3f} ms")
    if outcome.cosine is not None:
        parts.append(f"cos {outcome.cosine:.5f}")
    if outcome.top1_agreement is not None:
        parts.append(f"top-1 {outcome.top1_agreement:.1%}")
    return Text("  ".join(parts) + ("  (journal)" if outcome.reused else ""))


def print_batch(result: BatchResult) -> None:
    """The release table: models x targets."""
    models = list(dict.fromkeys(o.model for o in result.outcomes))
    targets = list(dict.fromkeys(o.target for o in result.outcomes))
    cells = {(o.model, o.target): o for o in result.outcomes}
    table = Table(title=f"{len(result.outcomes)} jobs: {len(result.outcomes) - len(result.failed)} ok, "
                        f"{len(result.failed)} failed, {result.reused} from the journal "
                        f"({result.seconds:.1f} s)", title_justify="left")
    table.add_column("model")
    for target in targets:
        table.add_column(f"{target}\nsize  latency  fidelity")
    for model in models:
        table.add_row(model, *(cell_text(cells[(model, t)]) if (model, t) in cells else Text("")
                               for t in targets))
    stdout.print(table)
    stdout.print(f"written: {result.output / 'batch.json'}, {result.output / 'batch.csv'}")
