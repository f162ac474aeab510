"""The planner's vocabulary: where a model is (ModelState) and where it must get to (Requirement)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Iterable, Mapping


CHANNELS_LAST_RANKS = (3, 4, 5)  # NCW, NCHW, NCDHW: the tensors layout "nhwc" moves channels last for
# The precisions of the vocabulary below whose arithmetic is integer only: the same model computes the same bytes
# on any platform (`--check-on` compares byte for byte). Any other precision, a plugin's own included, is compared
# within a tolerance.
EXACT_PRECISIONS = frozenset({"int8"})


@dataclass(frozen=True, order=True)
class ModelState:
    """A point in the space the planner searches.

    format: the file format ("onnx", "torch-export", ...).
    precision: "fp32", "fp16", "int8" (static, weights and activations), "int8-dynamic" (int8 weights, activations
        quantized at run time), "int4" (4-bit weights, float activations), or a plugin's own.
    graph: "raw" as a framework exported it, "optimized" after a clean-up pass.
    layout: "source" when inputs and outputs keep the source's layout; "nhwc" when a converter moved 3-D, 4-D
        and 5-D inputs and outputs from channels-first to channels-last (verification transposes for it).
    traits: compressions applied so far, sorted ("pruned", "channels-pruned", "distilled", ...). A step adds
        one with produces={"traits": "+pruned"}.
    """

    format: str
    precision: str = "fp32"
    graph: str = "raw"
    layout: str = "source"
    traits: tuple[str, ...] = ()

    def changed(self, changes: Mapping[str, str]) -> "ModelState":
        updates: dict = dict(changes)
        if "traits" in updates:
            added = {t.lstrip("+") for t in updates["traits"].split(",") if t.strip()}
            updates["traits"] = tuple(sorted(set(self.traits) | added))
        return replace(self, **updates)

    def __str__(self) -> str:
        text = f"{self.format}/{self.precision}/{self.graph}"
        if self.layout != "source":
            text += f"/{self.layout}"
        return text + "".join(f"+{t}" for t in self.traits)


STATE_ATTRIBUTES = tuple(f.name for f in fields(ModelState))


@dataclass(frozen=True)
class Requirement:
    """Allowed values per state attribute; an attribute not named is unconstrained."""

    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, **allowed: str | Iterable[str]) -> "Requirement":
        normalized = {}
        for attribute, values in allowed.items():
            if attribute not in STATE_ATTRIBUTES:
                raise ValueError(f"unknown state attribute {attribute!r}; known: {', '.join(STATE_ATTRIBUTES)}")
            normalized[attribute] = frozenset([values] if isinstance(values, str) else values)
        return cls(normalized)

    def matches(self, state: ModelState) -> bool:
        """Each named attribute has an allowed value; for traits, every trait named must be present."""
        return all(values <= set(state.traits) if attribute == "traits" else getattr(state, attribute) in values
                   for attribute, values in self.allowed.items())

    def narrowed(self, attribute: str, values: Iterable[str]) -> "Requirement":
        """This requirement with `attribute` limited further (traits: more required)."""
        values = frozenset(values)
        current = self.allowed.get(attribute)
        if attribute == "traits":
            combined = (current or frozenset()) | values
        else:
            combined = values if current is None else current & values
        return Requirement({**self.allowed, attribute: combined})

    def describe(self) -> str:
        return ", ".join(f"{a}={'|'.join(sorted(v))}" for a, v in sorted(self.allowed.items())) or "anything"


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. A dimension of None is dynamic; so is a negative one (exporters write -1 or 0
    sizes for dynamic axes), which becomes None."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        dynamic = tuple(None if d is None or int(d) < 0 else int(d) for d in self.shape)
        if dynamic != tuple(self.shape):
            object.__setattr__(self, "shape", dynamic)

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Mapping) -> "TensorSpec":
        return cls(data["name"], tuple(data["shape"]), data.get("dtype", "float32"))


@dataclass(frozen=True)
class ModelInfo:
    """What a format plugin can tell about a model file."""

    format: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    parameters: int | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "format": self.format,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "parameters": self.parameters,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> "ModelInfo":
        return cls(
            format=data["format"],
            inputs=tuple(TensorSpec.from_json(t) for t in data.get("inputs", ())),
            outputs=tuple(TensorSpec.from_json(t) for t in data.get("outputs", ())),
            parameters=data.get("parameters"),
            notes=tuple(data.get("notes", ())),
        )
