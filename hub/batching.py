"""`hub batch`: a matrix of models x targets, each job exactly one `convert` call.

A jobs file (YAML) lists `jobs:` and/or a `matrix:` of `models` x `targets`; every job field has the name of a
`hub convert` flag. The whole file is checked against the flags and the catalog's targets before anything runs.
Executors (hub.executors) only decide where a job runs. A journal under the output folder records every finished
job with the digests of its inputs, so a re-run skips what is unchanged; the step cache serves the rest.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import yaml
from yaml.constructor import SafeConstructor

from hub.cache import default_cache_root, digest_path, distribution_versions, step_key
from hub.errors import UsageError
from hub.plugins import load_catalog
from hub.requests import CompressionRequest

STATE_FOLDER = ".hub-batch"
PREFERENCES = ("balanced", "fidelity", "size", "speed")
DEFAULT_JOB_THREADS = 1     # jobs run side by side: one thread each unless a job asks for more
BASE_JOB_MEMORY_MB = 1536   # a step worker importing torch or tensorflow, plus the hub's own process
MEMORY_PER_MODEL_MB = 10    # MB of memory per MB of model (export and calibration hold several copies)


@dataclass(frozen=True)
class Job:
    """One conversion: the arguments of one `hub.convert` call, plus where its output goes."""

    model: Path
    to: str
    name: str
    calibration: Path | None = None
    compress: tuple[str, ...] = ()
    min_cosine: float | None = None
    min_top1: float | None = None
    max_abs: float | None = None
    check_on: tuple[str, ...] = ()
    input: tuple[str, ...] = ()
    prefer: str = "balanced"
    keep_layout: bool = False
    trust_pickle: bool = False
    threads: int = DEFAULT_JOB_THREADS
    timeout: float = 1800.0            # seconds one step may run (convert's --timeout)
    job_timeout: float | None = None   # seconds the whole job may run
    memory_limit: float | None = None  # MB per step worker (convert's --memory-limit); also what a job declares
    max_routes: int = 3
    line: int = 0                      # where the job is declared in the jobs file

    @property
    def id(self) -> str:
        return f"{self.name}/{self.to}"

    def memory_mb(self) -> float:
        """Memory the job declares to a scheduler: its limit, or an estimate from the model's size."""
        if self.memory_limit is not None:
            return self.memory_limit
        size_mb = model_bytes(self.model) / 1e6
        return BASE_JOB_MEMORY_MB + MEMORY_PER_MODEL_MB * size_mb

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(model=str(self.model), calibration=str(self.calibration) if self.calibration else None,
                    compress=list(self.compress), check_on=list(self.check_on), input=list(self.input))
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Job":
        return cls(**{**data, "model": Path(data["model"]),
                      "calibration": Path(data["calibration"]) if data["calibration"] else None,
                      "compress": tuple(data["compress"]), "check_on": tuple(data["check_on"]),
                      "input": tuple(data["input"])})

    def convert_arguments(self) -> dict[str, Any]:
        """Keyword arguments of hub.api.convert (output and cache aside)."""
        return {"calibration": self.calibration, "compress": list(self.compress), "check_on": list(self.check_on),
                "inputs": list(self.input), "prefer": self.prefer, "keep_layout": self.keep_layout,
                "trust_pickle": self.trust_pickle, "threads": self.threads, "step_timeout": self.timeout,
                "memory_limit_mb": self.memory_limit, "max_routes": self.max_routes,
                "tolerance": {"min_cosine": self.min_cosine, "min_top1": self.min_top1, "max_abs": self.max_abs}}


def model_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


# ---- the jobs file ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Field:
    kind: str           # "path", "text", "texts", "number", "fraction", "count", "flag", "choice"
    description: str


JOB_FIELDS: dict[str, _Field] = {
    "model": _Field("path", "model file or folder"),
    "to": _Field("text", "target name (see `hub targets`)"),
    "name": _Field("text", "the model's folder under the output (default: the file name up to its first dot)"),
    "calibration": _Field("path", ".npz, .npy or a folder of images"),
    "compress": _Field("texts", "compression requests: prune:F, prune-channels:F, clip:T, int4-weights, fp16"),
    "prune": _Field("fraction", "same as compress prune:F"),
    "distill": _Field("path", "unlabelled samples to distill a pruned model on"),
    "min_cosine": _Field("number", "override the target's minimum mean cosine"),
    "min_top1": _Field("number", "override the target's minimum top-1 agreement"),
    "max_abs": _Field("number", "fail a step whose max-abs error exceeds this"),
    "check_on": _Field("texts", "platforms the result must also run on (e.g. arm64)"),
    "input": _Field("texts", "NAME:SHAPE[:DTYPE] input declarations"),
    "prefer": _Field("choice", "balanced, fidelity, size or speed"),
    "keep_layout": _Field("flag", "keep the source's input/output layout"),
    "trust_pickle": _Field("flag", "allow loading pickled models"),
    "threads": _Field("count", "CPU threads of the job (what it declares to the scheduler)"),
    "timeout": _Field("number", "seconds one step may run"),
    "job_timeout": _Field("number", "seconds the whole job may run"),
    "memory_limit": _Field("number", "MB a step worker may hold (also what the job declares to the scheduler)"),
    "max_routes": _Field("count", "routes to try before giving up"),
}


@dataclass(frozen=True)
class _Entry:
    """Field values of one job declaration and the line each came from."""

    values: dict[str, Any]
    lines: dict[str, int]
    line: int

    def merged_over(self, base: "_Entry") -> "_Entry":
        return _Entry({**base.values, **self.values}, {**base.lines, **self.lines}, self.line)


def load_jobs(source: str | Path | dict) -> list[Job]:
    """The jobs of a jobs file (or of the same structure as a dict: paths then relative to the current folder).
    Raises UsageError naming the file, line and field of the first problem; checks nothing on disk."""
    if isinstance(source, dict):
        text, label, folder = yaml.safe_dump(source), "jobs", Path.cwd()
    else:
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as error:
            raise UsageError(f"cannot read the jobs file {path}: {error.strerror}") from None
        label, folder = str(path), path.resolve().parent
    return _JobsParser(label, folder).jobs(text)


class _JobsParser:
    def __init__(self, label: str, folder: Path) -> None:
        self.label = label
        self.folder = folder
        self.targets = load_catalog().targets

    def fail(self, line: int, problem: str, field_name: str | None = None) -> UsageError:
        where = f"{self.label} line {line}" + (f": field `{field_name}`" if field_name else "")
        return UsageError(f"{where}: {problem}")

    def jobs(self, text: str) -> list[Job]:
        try:
            root = yaml.compose(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            raise self.fail(mark.line + 1 if mark else 1, f"not valid YAML: {getattr(error, 'problem', error)}")
        if not isinstance(root, yaml.MappingNode):
            raise self.fail(_line(root) if root else 1, "expected a mapping with `jobs:` and/or `matrix:`")
        sections = self.mapping(root)
        for key in sections:
            if key not in ("jobs", "matrix"):
                raise self.fail(_line(sections[key][0]), "unknown section; a jobs file has `jobs:` and `matrix:`",
                                key)
        if not sections:
            raise self.fail(1, "no jobs: give a `jobs:` list or a `matrix:` of models and targets")
        defaults, entries = _Entry({}, {}, 0), []
        if "matrix" in sections:
            defaults, entries = self.matrix(sections["matrix"][1])
        by_id = {self.entry_id(e): i for i, e in enumerate(entries)}
        listed: set[str] = set()
        if "jobs" in sections:
            for node in self.sequence(sections["jobs"][1], "jobs"):
                entry = self.entry(node, required=("model", "to"))
                job_id = self.entry_id(entry.merged_over(defaults))
                if job_id in listed:
                    raise self.fail(entry.line, f"job {job_id} is listed twice")
                listed.add(job_id)
                if job_id in by_id:  # a listed job refines the matrix's job for the same model and target
                    entries[by_id[job_id]] = entry.merged_over(entries[by_id[job_id]])
                else:
                    by_id[job_id] = len(entries)
                    entries.append(entry.merged_over(defaults))
        jobs = [self.job(entry) for entry in entries]
        if not jobs:
            raise self.fail(1, "no jobs: the matrix and the jobs list are empty")
        return jobs

    def matrix(self, node: yaml.Node) -> tuple[_Entry, list[_Entry]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(_line(node), "expected a mapping with `models:` and `targets:`", "matrix")
        parts = self.mapping(node)
        for required in ("models", "targets"):
            if required not in parts:
                raise self.fail(_line(node), f"the matrix needs `{required}:`", "matrix")
        defaults = self.entry(node, skip=("models", "targets"), forbid=("model", "to"))
        models = [self.entry(n, required=("model",), forbid=("to",), short="model")
                  for n in self.sequence(parts["models"][1], "models")]
        targets = [self.entry(n, required=("to",), forbid=("model",), short="to")
                   for n in self.sequence(parts["targets"][1], "targets")]
        entries = [target.merged_over(model.merged_over(defaults)) for model in models for target in targets]
        seen: set[str] = set()
        for entry in entries:
            if self.entry_id(entry) in seen:
                raise self.fail(entry.line, f"job {self.entry_id(entry)} appears twice in the matrix")
            seen.add(self.entry_id(entry))
        return defaults, entries

    def mapping(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            name = str(key.value).replace("-", "_")
            if name in found:
                raise self.fail(_line(key), "given twice", name)
            found[name] = (key, value)
        return found

    def sequence(self, node: yaml.Node, name: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(_line(node), "expected a list", name)
        return list(node.value)

    def entry(self, node: yaml.Node, required: tuple[str, ...] = (), forbid: tuple[str, ...] = (),
              skip: tuple[str, ...] = (), short: str | None = None) -> _Entry:
        if short and isinstance(node, yaml.ScalarNode):  # `- model.onnx` in models, `- cpu-int8` in targets
            return _Entry({short: self.value(short, node)}, {short: _line(node)}, _line(node))
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(_line(node), f"expected a mapping of job fields ({', '.join(required) or 'defaults'})")
        values, lines = {}, {}
        for name, (key, value) in self.mapping(node).items():
            if name in skip:
                continue
            if name not in JOB_FIELDS or name in forbid:
                raise self.fail(_line(key), "not a job field here; job fields: " + ", ".join(JOB_FIELDS), name)
            values[name], lines[name] = self.value(name, value), _line(value)
        for name in required:
            if name not in values:
                raise self.fail(_line(node), "missing", name)
        return _Entry(values, lines, _line(node))

    def value(self, name: str, node: yaml.Node) -> Any:
        spec = JOB_FIELDS[name]
        value = SafeConstructor().construct_object(node, deep=True)
        line = _line(node)
        if spec.kind in ("path", "text", "choice"):
            if not isinstance(value, str) or not value.strip():
                raise self.fail(line, f"expected text ({spec.description}), got {value!r}", name)
            if spec.kind == "path":
                return self.folder / Path(value).expanduser()
            if name == "to" and value not in self.targets:
                raise self.fail(line, f"unknown target {value!r}; known: {', '.join(sorted(self.targets))}", name)
            if spec.kind == "choice" and value not in PREFERENCES:
                raise self.fail(line, f"{value!r} is not one of {', '.join(PREFERENCES)}", name)
            return value
        if spec.kind == "texts":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise self.fail(line, f"expected text or a list of texts ({spec.description})", name)
            items = [part.strip() for item in items for part in item.split(",") if part.strip()]
            if name == "compress":
                return tuple(self.compression(item, line) for item in items)
            return tuple(items)
        if spec.kind == "flag":
            if not isinstance(value, bool):
                raise self.fail(line, f"expected true or false, got {value!r}", name)
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(line, f"expected a number ({spec.description}), got {value!r}", name)
        if spec.kind == "count" and (not isinstance(value, int) or value < 1):
            raise self.fail(line, f"expected a whole number of at least 1, got {value!r}", name)
        if spec.kind == "fraction" and not 0 < value < 1:
            raise self.fail(line, f"expected a fraction between 0 and 1, got {value!r}", name)
        if spec.kind == "number" and value < 0:
            raise self.fail(line, f"expected a number of at least 0, got {value!r}", name)
        return value

    def compression(self, text: str, line: int) -> str:
        try:
            request = CompressionRequest.parse(text, load_catalog())
        except (UsageError, ValueError) as error:
            raise self.fail(line, getattr(error, "message", str(error)), "compress") from None
        if request.kind == "distill" and request.argument:  # a sample file, relative to the jobs file
            return f"distill:{self.folder / Path(request.argument).expanduser()}"
        return text

    def entry_id(self, entry: _Entry) -> str:
        return f"{_name_of(entry.values)}/{entry.values.get('to')}"

    def job(self, entry: _Entry) -> Job:
        values = dict(entry.values)
        compress = list(values.pop("compress", ()))
        if "prune" in values:
            compress.append(f"prune:{values.pop('prune')}")
        if "distill" in values:
            compress.append(f"distill:{values.pop('distill')}")
        return Job(**{**values, "name": _name_of(entry.values), "compress": tuple(compress), "line": entry.line})


def _name_of(values: dict) -> str:
    return values.get("name") or Path(values["model"]).name.split(".")[0]


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


# ---- outcomes, the journal, the table --------------------------------------------------------------------

@dataclass(frozen=True)
class JobOutcome:
    """One cell of the release table. status: "ok" or "failed"; reused: taken from the journal, not run now."""

    model: str
    target: str
    status: str
    seconds: float = 0.0
    bytes: int | None = None
    latency_ms: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    route: tuple[str, ...] = ()
    output: str | None = None
    report: str | None = None  # the job's report.html
    reason: str | None = None
    exit_code: int = 0
    reused: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        return {**asdict(self), "route": list(self.route)}

    @classmethod
    def from_json(cls, data: dict) -> "JobOutcome":
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "route": tuple(data.get("route", ()))})

    @classmethod
    def failure(cls, job: Job, reason: str, exit_code: int = 5, seconds: float = 0.0) -> "JobOutcome":
        return cls(job.name, job.to, "failed", seconds=seconds, reason=reason, exit_code=exit_code)


@dataclass(frozen=True)
class BatchResult:
    """The release table (one outcome per job, in jobs-file order) and where it was written."""

    outcomes: list[JobOutcome]
    output: Path
    seconds: float
    ran: int
    reused: int

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def exit_code(self) -> int:
        return 5 if self.failed else 0

    def to_json(self) -> dict:
        return {"output": str(self.output), "seconds": round(self.seconds, 3), "jobs": len(self.outcomes),
                "ran": self.ran, "reused": self.reused, "failed": len(self.failed),
                "outcomes": [o.to_json() for o in self.outcomes]}

    def to_csv(self) -> str:
        columns = ["model", "target", "status", "bytes", "latency_ms", "cosine", "top1_agreement", "seconds",
                   "reused", "output", "report", "reason"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for outcome in self.outcomes:
            writer.writerow(outcome.to_json())
        return buffer.getvalue()


def job_key(job: Job, version: str) -> str:
    """Digest of everything that decides a job's result: the model's and sample files' bytes, the options,
    the hub's version. A missing file digests as "missing", so the job runs again once it appears."""
    def digest(path: Path | None) -> str | None:
        return None if path is None else (digest_path(path) if path.exists() else "missing")

    options = {k: v for k, v in job.to_json().items() if k not in ("model", "calibration", "line")}
    options["compress"] = [_digest_request(text, digest) for text in job.compress]
    return step_key(kind="batch-job", model=digest(job.model), calibration=digest(job.calibration),
                    options=options, hub=version)


def _digest_request(text: str, digest: Any) -> str:
    name, _, argument = text.partition(":")
    return f"{name}:{digest(Path(argument))}" if name == "distill" else text


class Journal:
    """OUT/.hub-batch/journal.jsonl: one line per finished job, appended and flushed to disk as it finishes."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / STATE_FOLDER / "journal.jsonl"

    def finished(self) -> dict[str, JobOutcome]:
        """The last recorded outcome per job key (a line cut short by a crash is ignored)."""
        found: dict[str, JobOutcome] = {}
        if not self.path.exists():
            return found
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
                found[record["key"]] = JobOutcome.from_json(record["outcome"])
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def record(self, key: str, outcome: JobOutcome) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "finished": time.time(), "outcome": outcome.to_json()})
        with open(self.path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# ---- running ---------------------------------------------------------------------------------------------

class BatchProgress(Protocol):
    """What a batch tells its caller as it goes (the CLI draws it)."""

    def planned(self, total: int, reused: int, workers: int) -> None: ...
    def job_started(self, job: Job) -> None: ...
    def job_step(self, job: Job, step: str) -> None: ...
    def job_finished(self, job: Job, outcome: JobOutcome) -> None: ...


class SilentBatchProgress:
    def planned(self, total: int, reused: int, workers: int) -> None: ...
    def job_started(self, job: Job) -> None: ...
    def job_step(self, job: Job, step: str) -> None: ...
    def job_finished(self, job: Job, outcome: JobOutcome) -> None: ...


@dataclass(frozen=True)
class BatchSettings:
    output: Path
    cache: Path
    executor: str = "local"
    workers: int | None = None
    address: str | None = None
    retry_failed: bool = False


def batch(jobs: str | Path | dict, *, output: str | Path = "release", executor: str = "local",
          workers: int | None = None, address: str | None = None, retry_failed: bool = False,
          cache_dir: str | Path | None = None, progress: BatchProgress | None = None) -> BatchResult:
    """Run every job of a jobs file (path, or the same structure as a dict) as one `hub.convert` call each.

    Outputs go to OUTPUT/<model-name>/<target>/ (model and report.json), moved into place only when the job
    succeeds. executor "local": up to `workers` jobs at once in separate processes (default: as many as cores
    and memory allow); "ray": each job is a Ray task on the cluster at `address` (default: a local one).
    Jobs whose inputs, options and hub version are unchanged since they finished are taken from the journal
    (failed ones are run again only with retry_failed). One job failing, crashing or timing out never stops the
    others. Returns the table, also written to OUTPUT/batch.json and OUTPUT/batch.csv.
    """
    from hub.executors import executor_for

    started = time.perf_counter()
    if executor not in ("local", "ray"):
        raise UsageError(f"unknown executor {executor!r}: use local or ray")
    if workers is not None and workers < 1:
        raise UsageError(f"-j {workers}: run at least one job at a time")
    job_list = load_jobs(jobs)
    out = Path(output).resolve()
    settings = BatchSettings(out, Path(cache_dir).resolve() if cache_dir else default_cache_root().resolve(),
                             executor, workers, address, retry_failed)
    progress = progress or SilentBatchProgress()
    with _exclusive(out):
        journal = Journal(out)
        previous = journal.finished()
        version = distribution_versions(("conversion-hub",))["conversion-hub"]
        keys = {job.id: job_key(job, version) for job in job_list}
        outcomes: dict[str, JobOutcome] = {}
        for job in job_list:
            done = previous.get(keys[job.id])
            if done is not None and _still_valid(done, retry_failed):
                outcomes[job.id] = replace(done, reused=True)
        pending = [job for job in job_list if job.id not in outcomes]
        runnable = [job for job in pending if not _missing_files(job)]
        run = executor_for(settings) if runnable else None
        progress.planned(len(job_list), len(job_list) - len(pending), run.workers(runnable) if run else 0)
        for job in pending:
            if _missing_files(job):  # fails only this job, before it takes a worker
                outcomes[job.id] = JobOutcome.failure(job, f"no such file: {_missing_files(job)[0]}", exit_code=2)
                journal.record(keys[job.id], outcomes[job.id])
                progress.job_finished(job, outcomes[job.id])
        if run is not None:
            for job, outcome in run.run(runnable, progress):
                outcomes[job.id] = outcome
                journal.record(keys[job.id], outcome)
        result = BatchResult([outcomes[job.id] for job in job_list], out, time.perf_counter() - started,
                             ran=len(pending), reused=len(job_list) - len(pending))
        from hub.runner import write_text_atomically

        write_text_atomically(json.dumps(result.to_json(), indent=2), out / "batch.json")
        write_text_atomically(result.to_csv(), out / "batch.csv")
        return result


def _missing_files(job: Job) -> list[Path]:
    return [p for p in (job.model, job.calibration) if p is not None and not p.exists()]


def _still_valid(outcome: JobOutcome, retry_failed: bool) -> bool:
    if not outcome.ok:
        return not retry_failed
    return outcome.output is not None and Path(outcome.output).exists()


class _exclusive:
    """Holds OUT/.hub-batch/lock: two batches writing to one output folder would overwrite each other's jobs."""

    def __init__(self, out: Path) -> None:
        self.path = out / STATE_FOLDER / "lock"

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise UsageError(f"another `hub batch` is writing to {self.path.parent.parent}; wait for it or choose "
                             "another -o") from None

    def __exit__(self, *exc: Any) -> None:
        shutil.rmtree(self.path.parent / "staging", ignore_errors=True)  # what an interrupted job left
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()

