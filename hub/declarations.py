"""What plugins declare: formats, steps (converters and compressors), backends and targets.

Declarations are cheap data. Behaviour is named by reference, "package.module:function", so that listing
plugins imports no framework; the function is imported only inside the worker process that runs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hub.states import ModelState, Requirement, TensorSpec


@dataclass(frozen=True)
class Format:
    """A model file format.

    detect: "module:function" taking a Path and returning None/False when the file is not of this format,
        True or a dict of state attributes (e.g. {"precision": "int8"}) when it is. Runs in the hub's own
        process: it must be cheap and import no framework. It must not raise on foreign or corrupt files.
    describe: "module:function" taking (Path, options: dict) and returning a ModelInfo. Runs in a worker; may
        import the framework.
    executes_code: loading a file of this format runs code from it (pickles): refused without --trust-pickle.
    object_types: fully qualified class names of in-memory models this format can hold (e.g.
        "torch.nn.modules.module.Module"); save_object: "module:function" taking (obj, example_inputs, Path)
        that writes such an object as a file of this format. The Python API uses them for in-memory models.
    environment: the name of a hub-managed Environment that describe runs in (None: the hub's own).
    """

    name: str
    detect: str
    describe: str | None = None
    extensions: tuple[str, ...] = ()
    description: str = ""
    executes_code: bool = False
    requires: tuple[str, ...] = ()
    extra: str | None = None
    object_types: tuple[str, ...] = ()
    save_object: str | None = None
    environment: str | None = None


# The option the hub fills for a step with wants_later_precisions: the precisions its route goes on to.
LATER_PRECISIONS = "later_precisions"
OPTION_TYPES = (bool, int, float, str, list)
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


@dataclass(frozen=True)
class Option:
    """One option of a step, declared once: its name, type, default and meaning.

    type: bool, int, float, str or list. default: a value of that type, or None for "unset".
    path: the value names a file whose content (not its name) decides the step's output: it is hashed into the
        step's cache key, and a value given on the command line is made absolute and must exist.
    between: for numbers, the open interval (low, high) a value must lie in (e.g. a fraction: (0, 1)).
    """

    name: str
    type: type
    default: Any = None
    doc: str = ""
    path: bool = False
    between: tuple[float, float] | None = None

    def coerce(self, value: Any, where: str) -> Any:
        """The value as this option's type (strings from the command line are parsed); UsageError otherwise.
        where: what the value belongs to, for the message (e.g. "torch-magnitude-prune")."""
        from hub.errors import UsageError

        if value is None:
            return None
        try:
            converted = self._converted(value)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: option {self.name} takes a {self.type.__name__} ({self.doc}), not "
                             f"{value!r}") from None
        if self.between is not None and not self.between[0] < converted < self.between[1]:
            raise UsageError(f"{where}: {self.name}={value}: must be between {self.between[0]:g} and "
                             f"{self.between[1]:g}")
        if self.path:
            resolved = Path(converted).resolve()  # workers run in their own folder: they need an absolute path
            if not resolved.exists():
                raise UsageError(f"{where}: {self.name}={value}: no such file ({self.doc})")
            converted = str(resolved)
        return converted

    def _converted(self, value: Any) -> Any:
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                return value.lower() in _TRUE
            raise ValueError(value)
        if self.type is list:
            if isinstance(value, (list, tuple)):
                return list(value)
            if isinstance(value, str):
                return [item for item in value.split(",") if item]
            raise ValueError(value)
        if isinstance(value, bool) or (self.type is str and not isinstance(value, str)):
            raise TypeError(value)
        if self.type is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return self.type(value)


def defaults_of(options: tuple[Option, ...]) -> dict[str, Any]:
    """Each option's default by name: what a run function falls back on when called directly."""
    return {o.name: o.default for o in options}


@dataclass(frozen=True)
class Request:
    """A compression users ask for by name: `--compress NAME[:VALUE]` (or compress=["NAME:VALUE"] in the API).

    It becomes a constraint on the final state: attribute "traits" with the trait that must be present, or
    "precision" with the precision required. option: for a traits request, the option of the step that adds
    the trait which VALUE sets (it must be one of that step's options; None: the request takes no value).
    Several steps may declare the same request (pruning in torch and on ONNX): the planner picks where it runs.
    """

    name: str
    attribute: str
    value: str
    option: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Step:
    """One edge of the planner's graph: a converter (changes the format) or a compressor (changes precision).

    accepts: the states this step can start from. produces: the attributes it changes.
    run: "module:function" taking a StepContext and returning the Path of the artifact it wrote in
        ctx.workdir. It runs in a worker process on a copy of its input.
    Cost terms (see hub.planner): seconds + seconds_per_mb * input size in MB expected to run; fidelity_loss the
    expected drop in output cosine (0 for lossless); size_ratio the expected output/input size.
    requires: distribution requirements ("onnxruntime>=1.17") checked from metadata, never by importing.
    extra: the conversion-hub extra that installs them.
    min_cosine: for a lossy compression step the user asked for (pruning, clipping), the cosine below which its
        output is rejected, instead of the target's tolerance; later steps of the route inherit the relaxed
        bound. An explicit --min-cosine from the user wins.
    environment: the name of a hub-managed Environment whose interpreter runs the step (None: the hub's own);
        then `requires` is not checked against the hub's environment (the Environment's requirements hold).
    options: the step's options (see Option); its run function gets every one of them in ctx.options, the
        default unless the target, a request or the user set it. A user's option the step does not declare is
        refused with the list of those it does.
    satisfies: the compression request(s) this step meets (see Request), so that `--compress NAME` reaches it.
    wants_later_precisions: the step receives, as option LATER_PRECISIONS, the precisions of the states its
        route goes on to (e.g. ["fp32", "int8"]): a training step can prepare for a later quantization. Its
        cached output is then kept per route; other steps' do not depend on the route.
    time_budget_option: the name of one of its options that bounds the step's own wall time in seconds (a
        training budget): its worker's timeout grows to fit that bound, even beyond `timeout`.
    ladder: option overrides the runner tries in order, cheapest first, when the step's output fails
        verification (other calibration methods, sensitive layers kept in higher precision, ...): the first rung
        whose output meets the tolerance wins, and the report lists every rung tried with its fidelity. A model
        that passes on the step's own options pays nothing for the ladder.
    """

    name: str
    accepts: Requirement
    produces: Mapping[str, str]
    run: str
    description: str = ""
    seconds: float = 1.0
    seconds_per_mb: float = 0.0
    fidelity_loss: float = 0.0
    size_ratio: float = 1.0
    needs_calibration: bool = False
    options: tuple[Option, ...] = ()
    requires: tuple[str, ...] = ()
    extra: str | None = None
    timeout: float | None = None
    min_cosine: float | None = None
    environment: str | None = None
    satisfies: tuple[Request, ...] = ()
    wants_later_precisions: bool = False
    time_budget_option: str | None = None
    ladder: tuple[Mapping[str, Any], ...] = ()

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def defaults(self) -> dict[str, Any]:
        """Every declared option with its default value."""
        return defaults_of(self.options)

    def path_options(self) -> set[str]:
        """The options naming files whose content, not name, decides the output."""
        return {o.name for o in self.options if o.path}

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The user's options for this step, each converted to its declared type; an option the step does not
        declare is a UsageError listing the ones it does."""
        from hub.errors import UsageError

        checked = {}
        for name, value in options.items():
            declared = self.option(name)
            if declared is None:
                known = ", ".join(o.name for o in self.options) or "none"
                raise UsageError(f"step {self.name} has no option {name!r}; its options: {known} "
                                 "(`hub plugins --verbose` describes them)")
            checked[name] = declared.coerce(value, self.name)
        return checked

    def result_state(self, state: ModelState) -> ModelState:
        return state.changed(self.produces)

    def produced(self, attribute: str) -> set[str]:
        """The values this step gives a state attribute (for traits: the traits it adds)."""
        value = self.produces.get(attribute)
        if value is None:
            return set()
        if attribute == "traits":
            return {t.strip().lstrip("+") for t in value.split(",") if t.strip()}
        return {value}


@dataclass(frozen=True)
class Backend:
    """A runtime that executes models of some formats.

    run: "module:function" taking (model_path: Path, samples: list[dict[str, ndarray]], threads: int) and
        returning one list of output arrays per sample; each sample is one batch-1 feed.
    latency: "module:function" taking (model_path, sample, threads, repeats) and returning the median
        milliseconds of one inference.
    output_names: "module:function" taking model_path and returning the names of the model's outputs in the
        order `run` returns them (None: the backend cannot tell; verification then pairs outputs by shape).
    platform: set for a backend that runs models on another platform (e.g. "arm64" under emulation); such a
        backend is used by `--check-on PLATFORM` and `hub verify --on PLATFORM`, never for ordinary verification.
    prepare: "module:function" taking no arguments that sets the platform's runtime up once (idempotent; may
        download packages; prints progress to stderr) and returns a one-line description of it.
    prepared: "module:function" taking no arguments and cheaply telling whether prepare has run.
    priority: among backends for one format (after the target's own), lower runs verification first; a
        backend that refuses a model (UnsupportedModelError) hands it to the next.
    environment: the name of a hub-managed Environment whose interpreter runs the backend (None: the hub's own).
    """

    name: str
    formats: frozenset[str]
    run: str
    latency: str | None = None
    output_names: str | None = None
    description: str = ""
    requires: tuple[str, ...] = ()
    extra: str | None = None
    platform: str | None = None
    prepare: str | None = None
    prepared: str | None = None
    priority: int = 0
    environment: str | None = None


@dataclass(frozen=True)
class Environment:
    """A separate Python environment that the hub creates (`hub env create NAME`) and runs some plugin code in.

    For frameworks whose dependencies conflict with the hub's environment (mindspore wants numpy < 2): steps,
    backends and formats that name it run in workers started with its interpreter. The hub installs
    `requirements` plus its own core dependencies there and links the hub and the declaring plugins' packages in.
    """

    name: str
    requirements: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class Tolerance:
    """How far a step's outputs may drift from the reference's and still pass verification (see hub.verify).

    min_cosine: every output's mean cosine over the samples. min_top1: top-1 agreement, for outputs of kind
    "scores", "probability" and "class-map", and the decisions of sparse logits. max_abs: the largest absolute
    difference of any output. min_slice_cosine: every slice along a "tensor" output's feature axis; None
    derives it from min_cosine (hub.verify.min_slice_cosine).
    """

    min_cosine: float = 0.99
    min_top1: float | None = None
    max_abs: float | None = None
    min_slice_cosine: float | None = None

    def to_json(self) -> dict:
        return {"min_cosine": self.min_cosine, "min_top1": self.min_top1, "max_abs": self.max_abs,
                "min_slice_cosine": self.min_slice_cosine}


@dataclass(frozen=True)
class Target:
    """A named destination: the state a model must reach and the backend that runs it."""

    name: str
    backend: str
    requires: Requirement
    tolerance: Tolerance = Tolerance()
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StepContext:
    """What a step's run function gets.

    input_path: a private copy of the input artifact. workdir: an empty folder for the output.
    options: the step's default options updated with the user's. inputs: the model's input specs.
    calibration: an .npz with one array per input name, samples along the first axis (stacked batches of one, or
        whole inputs for inputs whose first dimension is not a batch of one: use calibration_feeds()), or None.
    notes: anything the step wants in the report (JSON-serialisable).
    """

    input_path: Path
    workdir: Path
    options: dict[str, Any]
    inputs: tuple[TensorSpec, ...] = ()
    calibration: Path | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def calibration_feeds(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The calibration samples as batch-1 feeds keyed by input name, cast to the inputs' dtypes, at most
        `limit` of them; empty when there is no calibration. A single array serves a single-input model."""
        if self.calibration is None:
            return []
        import numpy as np

        from hub.errors import UsageError

        with np.load(self.calibration, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        if len(arrays) == 1 and len(self.inputs) == 1:
            arrays = {self.inputs[0].name: next(iter(arrays.values()))}
        missing = [spec.name for spec in self.inputs if spec.name not in arrays]
        if missing:
            raise UsageError(f"the calibration data has no array for input(s) {', '.join(missing)}; "
                             f"it holds {', '.join(sorted(arrays)) or 'nothing'}")
        from hub.inputs import one_sample

        count = min((len(arrays[spec.name]) for spec in self.inputs), default=0)
        count = count if limit is None else min(count, limit)
        return [{spec.name: one_sample(arrays[spec.name], i, len(spec.shape)).astype(spec.dtype)
                 for spec in self.inputs} for i in range(count)]
