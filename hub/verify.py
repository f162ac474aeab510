"""Fidelity of an artifact against a float reference: the same inputs through both, each output compared on its
own with the metrics that fit it.

Outputs are paired by name, then by shape, never by position alone: converters reorder and rename outputs.
Each output gets a kind that decides its metrics:
- "scores" (class scores or logits, shaped (1, classes)): cosine, max-abs, top-1 agreement, top-5 containment and
  top-1 agreement where the source is confident; a target's `min_top1` holds the top-1 agreement over the
  samples where either side decides (DECIDED_MARGIN).
- "embedding" (a vector per sample, e.g. a sentence embedding): cosine and max-abs; an arg-max means nothing here.
- "class-map" (a class distribution at every position: a text recognizer's (1, steps, characters), a face
  detector's (1, 2, height, width) face/background map): cosine, max-abs and top-1 agreement per position, held to
  `min_top1`, over the positions where either side decides (DECIDED_MARGIN). Where one class is the background
  (the reference's arg-max at most positions: CTC's blank, "no face"), agreement counts only the positions where
  either side picks another class, as an intersection over union: a read that loses one character in ten
  then shows, not drowned by the blank steps around it. A sequence
  ((1, steps, classes)) is also judged whole: its sequence agreement is the share of samples whose runs of
  classes (repeats merged, the background dropped: what a CTC read decodes to) are the same, held to `min_top1`
  too, since one wrong character in a 30-character line is a wrong line.
- "tensor" (anything else: boxes and scores side by side, feature maps, sequences): cosine and max-abs over the
  whole output, and the cosine of every slice along its feature axis, so that a small-valued part (the class
  scores beside pixel coordinates in a detector's output) cannot vanish inside a whole-tensor cosine. Where the
  output is logits that decide by their sign (mostly negative, a few positives: a detector's per-anchor
  scores), the agreement on that sign where either side decides, held to `min_top1`; likewise for a map of
  probabilities (all in [0, 1]: a sigmoid's note onsets, a mask), whose yes is a value above one half.
- Per-anchor outputs beside such logits (an SSD-style detector's (1, anchors, 16) box regressions beside its
  (1, anchors, 1) scores) are judged only at the anchors either side's scores call an object: a box at an
  anchor with no object is never decoded, and int8 rounds those freely (MediaPipe's pose detector: cosine 0.96
  over all 2254 anchors). The whole-output cosine stays in the report (whole_cosine).
- "probability" (one value in [0, 1] per sample: a sigmoid's yes or no, a voice detector's speech probability):
  read as the two classes (1 - p, p) and judged as "scores" are: the cosine of that pair per sample, and the
  decision p > 0.5, which must agree where either side decides (DECIDED_MARGIN: p outside 0.4 to 0.6).
- Any other output of one value per sample has no direction of its own: its cosine is taken over all samples
  together. A per-sample cosine of one positive value is 1 whatever the value: a Silero VAD whose int8
  speech probability read 0.1 for 0.9 passed that way.
- "exact" (strings and booleans, which have no distance): the share of samples whose output is identical,
  which must be 1 whatever the tolerance; its cosine is that share and its max-abs the share that differs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from hub.declarations import Tolerance

CONFIDENT_SOFTMAX = 0.5
# A sample of class scores, or a position of a class map, counts for the top-1 agreement held to min_top1 only
# where one side decides: its top probability leads the runner-up by more than this. Between two undecided
# scores (MTCNN's face map at a face's rim, 0.52 against 0.48; an ImageNet crop the float model gives 0.3 to
# "tabby" and 0.25 to "tiger cat") a flip changes no answer. Counted, four such flips in 32 verification crops
# (0.875) made the ladder keep two of EfficientNet-Lite0's convolutions float (0.31x the float size instead of
# 0.27x), where the plain int8 result met the bound on the decided crops. A sample the source decides and the
# candidate does not (or decides otherwise) still counts. Top-1 agreement over all samples is reported too.
DECIDED_MARGIN = 0.2
EXACT_KINDS = "OUSb"  # numpy kinds of objects (strings), unicode, bytes and booleans
# A slice may drift this many times further from cosine 1 than the whole output may (0.98 -> 0.94): single
# channels are noisier than their sum, but a part that the result has lost falls far below. At 10 times
# (0.98 -> 0.8) an int8 YOLOv8 passed with a class-score slice at cosine 0.89 while keeping 39% of its detections.
SLICE_DRIFT_FACTOR = 3.0
MIN_SLICE_COSINE_FLOOR = 0.5
# A slice is judged by its direction only when it carries at least this share of the output's largest value:
# the background rows of a text-probability map (values near 1e-7) have a direction of pure rounding noise, and
# failed a float-exact clean-up at cosine 0. Class scores beside pixel coordinates (1 beside 320) stay judged.
MIN_SLICE_SHARE = 1e-3
# A failing slice whose values reach at most this share of the output's largest is named as a mixed-scale loss
# (YOLOv8's class scores, at most 1, beside box coordinates up to 320: one int8 output scale of 1.25 rounds every
# score to 0 or 1.25), so that the message says what no rung of a full-integer target can fix.
MIXED_SCALE_SHARE = 0.05
# An output whose values are below zero but for at most this share of them, and above it somewhere, is read as
# logits that decide by their sign (a sigmoid above one half): MediaPipe's face detector scores 896 anchors from
# -590 to +3, and an int8 result that clipped every positive score to 0 kept none of its faces at a whole-output
# cosine of 0.983. Its positives are then judged as decisions (decision_agreement, held to min_top1); between
# LOGIT_MARGIN and its negative (a sigmoid of 0.4 to 0.6, as DECIDED_MARGIN) a position is undecided.
SPARSE_POSITIVE_SHARE = 0.1
LOGIT_MARGIN = 0.4
# PROBABILITY_MAP: an output whose values all lie in [0, 1], above one half somewhere, is read as probabilities
# that say yes above one half (a sigmoid's map: a note transcriber's onsets, a segmentation mask) and judged as
# the logits above. Basic Pitch's int8 onset map kept cosine 0.98 while its onsets above one half matched the
# float model's at F1 0.64. A value must move by about 0.1 across one half to count as a flip, so normalised
# coordinates or pixel intensities in [0, 1] pass the same check at int8's usual error.
PROBABILITY_FLOOR = 1e-7
SCORE_NAME = re.compile(r"logit|score|prob|class|cls|label|pred")
EMBEDDING_NAME = re.compile(r"embed|hidden|pool|feature|sentence|token|vector|encod")


@dataclass(frozen=True)
class Outputs:
    """A model's outputs on the verification samples: per sample, one array per output, in the order of `names`
    (None for an output whose backend does not know its name)."""

    samples: list[list[np.ndarray]]
    names: tuple[str | None, ...] = ()

    @classmethod
    def of(cls, value: "Outputs | list[list[np.ndarray]]") -> "Outputs":
        return value if isinstance(value, Outputs) else cls(value)

    def name(self, index: int) -> str | None:
        return self.names[index] if index < len(self.names) else None

    def count(self) -> int:
        return len(self.samples[0]) if self.samples else len(self.names)


@dataclass(frozen=True)
class OutputFidelity:
    """One output's agreement with the reference's output it was paired with.

    name: the reference's name for it ("output N" when unnamed); matched: the artifact's name for its partner;
    matched_by: "name", "shape" or "order among outputs of the same shape" (the last only when names and shapes
    cannot tell them apart). worst_slice / worst_slice_cosine: along slice_axis, the slice that agrees least.
    """

    name: str
    matched: str
    matched_by: str
    kind: str
    shape: tuple[int, ...]
    cosine: float
    max_abs: float
    slice_axis: int | None = None
    worst_slice: int | None = None
    worst_slice_cosine: float | None = None
    worst_slice_share: float | None = None  # its largest value over the output's largest
    top1_agreement: float | None = None
    top5_containment: float | None = None
    confident_top1_agreement: float | None = None
    confident_samples: int = 0
    decided_top1_agreement: float | None = None
    decided_samples: int | None = None
    class_axis: int | None = None
    background_class: int | None = None
    positions_compared: int | None = None
    sequence_agreement: float | None = None
    exact_agreement: float | None = None
    decision_agreement: float | None = None
    anchors_judged: int | None = None  # judged only at anchors a decision output calls an object (see above)
    whole_cosine: float | None = None

    def to_json(self) -> dict:
        data = {key: getattr(self, key) for key in self.__dataclass_fields__}
        data["shape"] = list(self.shape)
        for key in ("cosine", "max_abs", "worst_slice_cosine", "worst_slice_share", "top1_agreement", "top5_containment",
                    "confident_top1_agreement", "decided_top1_agreement", "sequence_agreement", "exact_agreement",
                    "decision_agreement", "whole_cosine"):
            data[key] = _rounded(data[key])
        return data

    @classmethod
    def from_json(cls, data: dict) -> "OutputFidelity":
        return cls(**{**data, "shape": tuple(data["shape"])})

    def violations(self, tolerance: Tolerance) -> list[str]:
        return _violations(self, tolerance)


@dataclass(frozen=True)
class Fidelity:
    """The artifact's agreement with the reference over all outputs; `outputs` has each output's own figures.

    max_abs: the largest absolute difference of any output. cosine: the lowest per-output mean cosine (over
    samples). top1_agreement: the lowest over outputs of kind "scores" and "class-map"; top5_containment,
    confident_top1_agreement: the lowest over "scores" outputs (None when there are none). worst_slice_cosine:
    the lowest slice cosine of any "tensor" output.
    """

    samples: int
    max_abs: float
    cosine: float
    top1_agreement: float | None = None
    top5_containment: float | None = None
    confident_top1_agreement: float | None = None
    confident_samples: int = 0
    worst_slice_cosine: float | None = None
    outputs: tuple[OutputFidelity, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        return {
            "samples": self.samples,
            "max_abs": _rounded(self.max_abs),
            "cosine": _rounded(self.cosine),
            "top1_agreement": _rounded(self.top1_agreement),
            "top5_containment": _rounded(self.top5_containment),
            "confident_top1_agreement": _rounded(self.confident_top1_agreement),
            "confident_samples": self.confident_samples,
            "worst_slice_cosine": _rounded(self.worst_slice_cosine),
            "outputs": [o.to_json() for o in self.outputs],
        }

    @classmethod
    def from_json(cls, data: dict) -> "Fidelity":
        outputs = tuple(OutputFidelity.from_json(o) for o in data.get("outputs", ()))
        return cls(**{**data, "outputs": outputs})

    def violations(self, tolerance: Tolerance) -> list[str]:
        if not self.outputs:  # a summary without per-output figures (e.g. built by hand)
            return _violations(self, tolerance)
        several = len(self.outputs) > 1
        return [f"output {o.name}: {v}" if several else v for o in self.outputs for v in o.violations(tolerance)]


def _violations(figures: "OutputFidelity | Fidelity", tolerance: Tolerance) -> list[str]:
    """What an output (or a summary of outputs) misses of the tolerance; the slice bound applies to outputs
    measured slice by slice."""
    exact = getattr(figures, "exact_agreement", None)
    if exact is not None:
        return [] if exact == 1.0 else [f"exact agreement {exact:.3f} < 1 (strings and booleans must match)"]
    found = []
    if not figures.cosine >= tolerance.min_cosine:  # written so that a NaN cosine fails too
        found.append(f"cosine {figures.cosine:.5f} < {tolerance.min_cosine}")
    axis = getattr(figures, "slice_axis", None)
    if axis is not None and figures.worst_slice_cosine is not None \
            and not figures.worst_slice_cosine >= min_slice_cosine(tolerance):
        found.append(f"slice {figures.worst_slice} along axis {axis} has cosine {figures.worst_slice_cosine:.4f} "
                     f"< {min_slice_cosine(tolerance):.4g}{_mixed_scale_hint(figures)}")
    decided = getattr(figures, "decided_samples", None)
    if tolerance.min_top1 is not None and decided is not None:  # class scores: judged where a side decides
        agreement = figures.decided_top1_agreement
        if decided and agreement < tolerance.min_top1:
            among = "" if agreement == figures.top1_agreement else \
                f" (over the {decided} samples either side decides; {figures.top1_agreement:.3f} over all)"
            found.append(f"top-1 agreement {agreement:.3f} < {tolerance.min_top1}{among}")
    elif tolerance.min_top1 is not None and figures.top1_agreement is not None \
            and figures.top1_agreement < tolerance.min_top1:
        found.append(f"top-1 agreement {figures.top1_agreement:.3f} < {tolerance.min_top1}")
    sequences = getattr(figures, "sequence_agreement", None)
    if tolerance.min_top1 is not None and sequences is not None and sequences < tolerance.min_top1:
        found.append(f"sequence agreement {sequences:.3f} < {tolerance.min_top1}")
    decisions = getattr(figures, "decision_agreement", None)
    if tolerance.min_top1 is not None and decisions is not None and decisions < tolerance.min_top1:
        found.append(f"decision agreement {decisions:.3f} < {tolerance.min_top1} (where either side says yes: "
                     f"a positive logit, or a probability above one half)")
    if tolerance.max_abs is not None and not figures.max_abs <= tolerance.max_abs:
        found.append(f"max-abs {figures.max_abs:.3g} > {tolerance.max_abs}")
    return found


def _mixed_scale_hint(figures: "OutputFidelity | Fidelity") -> str:
    share = getattr(figures, "worst_slice_share", None)
    if share is None or share > MIXED_SCALE_SHARE:
        return ""
    return (f" (its values reach 1/{1 / share:.0f} of the output's largest: an output that mixes scales, such as "
            "class scores beside pixel coordinates, loses its small part under one int8 scale; a float-output "
            "target keeps it)")


def min_slice_cosine(tolerance: Tolerance) -> float:
    """The bound on every slice of a "tensor" output: the tolerance's own, or derived from min_cosine."""
    if tolerance.min_slice_cosine is not None:
        return tolerance.min_slice_cosine
    return max(MIN_SLICE_COSINE_FLOOR, 1.0 - SLICE_DRIFT_FACTOR * (1.0 - tolerance.min_cosine))


def _rounded(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


# ---- element-wise measures ------------------------------------------------------------------------------

def finite_parts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The finite values of two same-sized arrays as flat float64, or None when their NaNs and infinities
    differ (in place or in sign): a model may legitimately output NaN (the square root of a negative input), and
    agrees with its source only if it does so in the same places."""
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    finite = np.isfinite(a)
    if not np.array_equal(finite, np.isfinite(b)) or not np.array_equal(a[~finite], b[~finite], equal_nan=True):
        return None
    return a[finite], b[finite]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    parts = finite_parts(a, b)
    if parts is None:
        return 0.0
    a, b = parts
    # scaled first: the squares of values beyond 1e154 overflow float64 and would make the cosine NaN
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    if scale > 0:
        a, b = a / scale, b / scale
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms == 0:  # one of them is all zeros (or underflowed to zero): only equal arrays agree
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norms)


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest absolute difference over the finite values; infinite when NaNs or infinities differ."""
    parts = finite_parts(a, b)
    if parts is None:
        return float("inf")
    a, b = parts
    return float(np.max(np.abs(a - b), initial=0.0))


# ---- pairing outputs --------------------------------------------------------------------------------------

def plain_name(name: str | None) -> str | None:
    """A name without the decorations converters add (TF's "serving_default_" and ":0"), lower case."""
    if not name:
        return None
    name = name.lower().removeprefix("serving_default_")
    return re.sub(r":\d+$", "", name)


def _core_shape(array: np.ndarray) -> tuple[int, ...]:
    """The shape without its 1-sized dimensions: a converter may add or drop a unit batch axis."""
    return tuple(d for d in array.shape if d != 1)


def pair_outputs(reference: Outputs, candidate: Outputs) -> list[tuple[int, int, str]]:
    """(reference index, candidate index, how) for every output: by name where both sides name it alike, then
    by a shape no other unpaired output has, then, among outputs of one shape, in order. Raises ValueError when
    the counts differ or an output has no partner of its size."""
    count = reference.count()
    if candidate.count() != count:
        raise ValueError(f"the artifact has {candidate.count()} outputs, the reference {count}")
    pairs: list[tuple[int, int, str]] = []
    free = list(range(count))
    by_name = {plain_name(candidate.name(j)): j for j in free if candidate.name(j)}
    for i in range(count):
        j = by_name.get(plain_name(reference.name(i)))
        if j is not None and j in free and reference.samples[0][i].size == candidate.samples[0][j].size:
            pairs.append((i, j, "name"))
            free.remove(j)
    unpaired = [i for i in range(count) if all(p[0] != i for p in pairs)]
    for shape_of in (_core_shape, lambda array: (array.size,)):
        for i in list(unpaired):
            shape = shape_of(reference.samples[0][i])
            same = [j for j in free if shape_of(candidate.samples[0][j]) == shape]
            twins = [k for k in unpaired if shape_of(reference.samples[0][k]) == shape]
            if not same:
                continue
            how = "shape" if len(same) == 1 and len(twins) == 1 else "order among outputs of the same shape"
            pairs.append((i, same[0], how))
            free.remove(same[0])
            unpaired.remove(i)
    if unpaired:
        i = unpaired[0]
        raise ValueError(f"output {reference.name(i) or i} of shape {reference.samples[0][i].shape} has no "
                         "counterpart of that size in the artifact")
    return sorted(pairs)


# ---- per-output measures ----------------------------------------------------------------------------------

def output_kind(arrays: list[np.ndarray], names: tuple[str | None, ...]) -> str:
    """probability, scores, embedding, class-map or tensor (see the module's docstring): names decide first
    (after one value per sample), then the values."""
    first = arrays[0]
    if first.size == 1 and all(np.isfinite(a).all() and 0 <= a.min() and a.max() <= 1 for a in arrays):
        return "probability"
    if class_axis(arrays) is not None:
        return "class-map"
    if not (first.ndim == 2 and first.shape[0] == 1 and first.shape[1] > 1):
        return "tensor"
    hint = " ".join(plain_name(n) or "" for n in names)
    if EMBEDDING_NAME.search(hint):
        return "embedding"
    if SCORE_NAME.search(hint):
        return "scores"
    rows = np.stack([a.reshape(-1).astype(np.float64) for a in arrays])
    if not np.all(np.isfinite(rows)) or np.max(np.abs(rows)) > 1e6:  # overflow-safe: such rows are no unit vectors
        return "scores"
    if np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3) and not _are_probabilities(rows):
        return "embedding"  # unit-length vectors: a normalised embedding, not logits
    return "scores"


def _are_probabilities(rows: np.ndarray) -> bool:
    return bool(np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))


def class_axis(arrays: list[np.ndarray]) -> int | None:
    """The axis (last, else channels) along which every position of a map holds a probability distribution
    over classes; None for a vector (a (1, classes) output is plain "scores") or anything that is no such map."""
    first = arrays[0]
    if first.ndim < 3 or first.size == first.shape[-1] or not all(np.all(np.isfinite(a)) for a in arrays):
        return None
    for axis in dict.fromkeys((first.ndim - 1, 1)):
        if first.shape[axis] > 1 and all(_are_probabilities(np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis]))
                                         for a in arrays):
            return axis
    return None


def _class_map_agreement(reference: list[np.ndarray], candidate: list[np.ndarray], axis: int) -> dict:
    """Top-1 agreement per position; with a background class, over the positions either side calls something
    else (see the module's docstring)."""
    ref = np.concatenate([np.argmax(r, axis=axis).reshape(-1) for r in reference])
    cand = np.concatenate([np.argmax(c, axis=axis).reshape(-1) for c in candidate])
    classes, counts = np.unique(ref, return_counts=True)
    background = int(classes[np.argmax(counts)]) if counts.max() > ref.size / 2 else None
    counted = np.ones_like(ref, dtype=bool) if background is None else (ref != background) | (cand != background)
    counted &= _decided(reference, axis) | _decided(candidate, axis)
    agreement = float(np.mean(ref[counted] == cand[counted])) if counted.any() else 1.0
    figures = {"top1_agreement": agreement, "class_axis": axis, "background_class": background,
               "positions_compared": int(counted.sum())}
    if reference[0].ndim == 3 and axis == 2:
        same = [_runs(np.argmax(r, axis=axis).reshape(-1), background)
                == _runs(np.argmax(c, axis=axis).reshape(-1), background) for r, c in zip(reference, candidate)]
        figures["sequence_agreement"] = float(np.mean(same))
    return figures


def _decided(maps: list[np.ndarray], axis: int) -> np.ndarray:
    """Per position, whether the map picks its class by more than DECIDED_MARGIN over the runner-up."""
    flat = [np.moveaxis(m.astype(np.float64), axis, -1).reshape(-1, m.shape[axis]) for m in maps]
    top_two = np.sort(np.concatenate(flat), axis=1)[:, -2:]
    return (top_two[:, 1] - top_two[:, 0]) > DECIDED_MARGIN


def _runs(classes: np.ndarray, background: int | None) -> list[int]:
    """The classes of a sequence with repeats merged and the background dropped."""
    merged = [int(c) for i, c in enumerate(classes) if i == 0 or c != classes[i - 1]]
    return [c for c in merged if c != background]


def slice_axis(shape: tuple[int, ...]) -> int | None:
    """The feature axis whose slices are compared on their own: channels for images and volumes (axis 1, or the
    last axis behind a square NHWC plane), else the shortest axis longer than 1 (the 85 of a detector's
    (1, 8400, 85)); None for a vector, and for a one-channel map: its rows and columns are places, not features
    (an int8 text-probability map zeroes faint background rows, whose direction is lost though nothing the task
    reads is)."""
    long_axes = [axis for axis, size in enumerate(shape) if size > 1]
    if len(long_axes) < 2:
        return None
    if len(shape) >= 4:
        if 1 in (shape[1], shape[-1]):
            return None
        channels_last = len(shape) == 4 and shape[1] == shape[2] != shape[3]
        return len(shape) - 1 if channels_last else 1
    return min(long_axes, key=lambda axis: (shape[axis], axis))


def _worst_slice(reference: list[np.ndarray], candidate: list[np.ndarray],
                 axis: int) -> tuple[int, float, float] | None:
    """The slice along `axis` (over all samples) whose cosine is lowest, with its largest magnitude as a share of
    the output's, skipping slices the reference leaves at zero or near it (MIN_SLICE_SHARE: such a slice is
    judged by max-abs, not by the direction of its noise)."""
    ref = np.stack(reference).astype(np.float64)
    cand = np.stack(candidate).astype(np.float64)
    finite = np.abs(ref[np.isfinite(ref)])
    floor = MIN_SLICE_SHARE * (finite.max() if finite.size else 0.0)
    worst: tuple[int, float, float] | None = None
    for index in range(ref.shape[axis + 1]):
        ref_slice, cand_slice = np.take(ref, index, axis=axis + 1), np.take(cand, index, axis=axis + 1)
        magnitude = np.abs(ref_slice[np.isfinite(ref_slice)])
        if not magnitude.size or not magnitude.max() > floor:
            continue
        value = cosine(ref_slice, cand_slice)
        if worst is None or not value >= worst[1]:
            worst = (index, value, float(magnitude.max() / finite.max()))
    return worst


def _decision_agreement(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    """For an output that says yes or no at each position, the agreement on that decision over the positions
    either side decides and calls yes (as for a class map's foreground); empty for any other output. Such an
    output is logits that say yes where positive (a detector's per-anchor score: mostly far below zero, positive
    at the few anchors that hold an object; see SPARSE_POSITIVE_SHARE), or a map of probabilities that say yes
    above one half (see PROBABILITY_MAP), judged as the logits they are the sigmoid of."""
    ref = np.concatenate([r.reshape(-1) for r in reference]).astype(np.float64)
    cand = np.concatenate([c.reshape(-1) for c in candidate])
    if not np.all(np.isfinite(ref)):
        return {}
    if 0 <= ref.min() and ref.max() <= 1 and ref.max() > 0.5:
        ref, cand = _logits(ref), _logits(cand)
    elif ref.min() >= 0 or not 0 < np.mean(ref > 0) <= SPARSE_POSITIVE_SHARE:
        return {}
    decided = (np.abs(ref) > LOGIT_MARGIN) | (np.abs(cand) > LOGIT_MARGIN)
    counted = decided & ((ref > 0) | (cand > 0))
    if not counted.any():
        return {}
    return {"decision_agreement": float(np.mean((ref[counted] > 0) == (cand[counted] > 0)))}


def _logits(probabilities: np.ndarray) -> np.ndarray:
    clipped = np.clip(probabilities.astype(np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return np.log(clipped) - np.log1p(-clipped)


def _softmax_max(logits: np.ndarray) -> float:
    shifted = logits.astype(np.float64) - logits.max()
    probabilities = np.exp(shifted) / np.exp(shifted).sum()
    return float(probabilities.max())


def _class_agreement(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    top1, top5, confident, decided = [], [], [], []
    for ref, cand in zip(reference, candidate, strict=True):
        ref, cand = ref.reshape(-1), cand.reshape(-1)
        source_class = int(np.argmax(ref))
        agrees = source_class == int(np.argmax(cand))
        top1.append(agrees)
        top5.append(source_class in np.argsort(-cand)[:5])
        if _softmax_max(ref) > CONFIDENT_SOFTMAX:
            confident.append(agrees)
        if max(_lead(ref), _lead(cand)) > DECIDED_MARGIN:
            decided.append(agrees)
    return {"top1_agreement": float(np.mean(top1)), "top5_containment": float(np.mean(top5)),
            "confident_top1_agreement": float(np.mean(confident)) if confident else None,
            "confident_samples": len(confident),
            "decided_top1_agreement": float(np.mean(decided)) if decided else None,
            "decided_samples": len(decided)}


def _lead(scores: np.ndarray) -> float:
    """How far the top class leads the runner-up, in probability: the scores themselves where they lie in
    [0, 1] (probabilities, sigmoid outputs), else their softmax (logits)."""
    values = scores.astype(np.float64)
    if not (np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1):
        values = np.exp(values - np.max(values))
        values = values / values.sum()
    top_two = np.sort(values)[-2:]
    return float(top_two[1] - top_two[0])


def compare_output(name: str, matched: str, matched_by: str, reference: list[np.ndarray],
                   candidate: list[np.ndarray], names: tuple[str | None, ...]) -> OutputFidelity:
    """One output over all samples (`reference[s]` against `candidate[s]`)."""
    if any(np.asarray(r).dtype.kind in EXACT_KINDS for r in reference):
        return _compare_exactly(name, matched, matched_by, reference, candidate)
    candidate = [c.reshape(r.shape).astype(np.float64) for r, c in zip(reference, candidate, strict=True)]
    kind = output_kind(reference, names)
    figures: dict = {}
    judged = (reference, candidate)
    if kind == "probability":
        judged = tuple([np.concatenate([1 - a.reshape(-1), a.reshape(-1)]) for a in arrays] for arrays in judged)
    if kind in ("scores", "probability"):
        figures = _class_agreement(*judged)
    if kind == "class-map":
        figures = _class_map_agreement(reference, candidate, class_axis(reference))
    axis = slice_axis(reference[0].shape) if kind == "tensor" else None
    if axis is not None:
        worst = _worst_slice(reference, candidate, axis)
        if worst is not None:
            figures.update(slice_axis=axis, worst_slice=worst[0], worst_slice_cosine=worst[1],
                           worst_slice_share=worst[2])
    if kind == "tensor":
        figures.update(_decision_agreement(reference, candidate))
    return OutputFidelity(
        name=name, matched=matched, matched_by=matched_by, kind=kind, shape=tuple(reference[0].shape),
        cosine=_mean_cosine(*judged),
        max_abs=max((max_abs_difference(r, c) for r, c in zip(reference, candidate)), default=0.0),
        **figures)


def _mean_cosine(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """The mean of the per-sample cosines; over all samples at once for one value per sample (see above)."""
    if reference[0].size == 1:
        return cosine(np.concatenate([r.reshape(-1) for r in reference]),
                      np.concatenate([c.reshape(-1) for c in candidate]))
    return float(np.mean([cosine(r, c) for r, c in zip(reference, candidate)]))


def _compare_exactly(name: str, matched: str, matched_by: str, reference: list[np.ndarray],
                     candidate: list[np.ndarray]) -> OutputFidelity:
    same = float(np.mean([np.array_equal(np.asarray(r).astype(str), np.asarray(c).astype(str))
                          for r, c in zip(reference, candidate, strict=True)]))
    return OutputFidelity(name=name, matched=matched, matched_by=matched_by, kind="exact",
                          shape=tuple(np.asarray(reference[0]).shape), cosine=same, max_abs=1.0 - same,
                          exact_agreement=same)


def compare(reference: Outputs | list[list[np.ndarray]], candidate: Outputs | list[list[np.ndarray]]) -> Fidelity:
    """Compare the candidate's outputs with the reference's, output by output (paired by name, then shape);
    raises ValueError when they do not line up."""
    reference, candidate = Outputs.of(reference), Outputs.of(candidate)
    if len(reference.samples) != len(candidate.samples):
        raise ValueError(f"{len(candidate.samples)} output sets for {len(reference.samples)} samples")
    if not reference.samples:
        return Fidelity(samples=0, max_abs=0.0, cosine=1.0)
    for sample in candidate.samples:
        if len(sample) != reference.count():
            raise ValueError(f"the artifact has {len(sample)} outputs, the reference {reference.count()}")
    outputs, arrays = [], []
    for i, j, how in pair_outputs(reference, candidate):
        name = reference.name(i) or f"output {i}"
        arrays.append(([r[i] for r in reference.samples],
                       [_shaped_as(c[j], r[i]) for r, c in zip(reference.samples, candidate.samples)]))
        outputs.append(compare_output(name, candidate.name(j) or f"output {j}", how, *arrays[-1],
                                      (reference.name(i), candidate.name(j))))
    return summarize(len(reference.samples), _judged_at_detections(outputs, arrays))


def _shaped_as(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The candidate in the reference's shape where it has as many values (a converter may move unit axes)."""
    candidate = np.asarray(candidate)
    return candidate.reshape(np.shape(reference)) if candidate.size == np.size(reference) else candidate


def _judged_at_detections(outputs: list[OutputFidelity],
                          arrays: list[tuple[list[np.ndarray], list[np.ndarray]]]) -> list[OutputFidelity]:
    """Each per-anchor "tensor" output re-judged at the anchors that a decision output of as many anchors calls
    an object on either side (see the module's docstring); the others as they are."""
    judged = list(outputs)
    for scores, (score_ref, score_cand) in zip(outputs, arrays):
        anchors = _anchor_count(scores.shape)
        if scores.decision_agreement is None or anchors is None:
            continue
        objects = [(r.reshape(-1) > 0) | (c.reshape(-1) > 0) for r, c in zip(score_ref, score_cand)]
        if not any(mask.any() for mask in objects):
            continue
        for index, (output, (ref, cand)) in enumerate(zip(outputs, arrays)):
            if output is not scores and output.kind == "tensor" and len(output.shape) == 3 \
                    and output.shape[:2] == (1, anchors):
                judged[index] = _at_anchors(output, ref, cand, objects)
    return judged


def _anchor_count(shape: tuple[int, ...]) -> int | None:
    """A (1, anchors) or (1, anchors, 1) output's anchors."""
    if len(shape) not in (2, 3) or shape[0] != 1 or shape[1] < 2 or (len(shape) == 3 and shape[2] != 1):
        return None
    return shape[1]


def _at_anchors(output: OutputFidelity, reference: list[np.ndarray], candidate: list[np.ndarray],
                objects: list[np.ndarray]) -> OutputFidelity:
    rows = [(r.reshape(len(mask), -1)[mask].astype(np.float64), c.reshape(len(mask), -1)[mask].astype(np.float64))
            for r, c, mask in zip(reference, candidate, objects) if mask.any()]
    worst = _worst_slice([np.concatenate([r for r, _ in rows])], [np.concatenate([c for _, c in rows])], 1)
    return replace(output, cosine=float(np.mean([cosine(r, c) for r, c in rows])), whole_cosine=output.cosine,
                   anchors_judged=int(sum(len(r) for r, _ in rows)),
                   worst_slice=worst[0] if worst else output.worst_slice,
                   worst_slice_cosine=worst[1] if worst else output.worst_slice_cosine,
                   worst_slice_share=worst[2] if worst else output.worst_slice_share)


def summarize(samples: int, outputs: list[OutputFidelity]) -> Fidelity:
    scores = [o for o in outputs if o.kind == "scores"]
    top1 = [o.top1_agreement for o in outputs if o.top1_agreement is not None]
    slices = [o.worst_slice_cosine for o in outputs if o.worst_slice_cosine is not None]
    confident = [o.confident_top1_agreement for o in scores if o.confident_top1_agreement is not None]
    return Fidelity(
        samples=samples,
        max_abs=max((o.max_abs for o in outputs), default=0.0),
        cosine=min((o.cosine for o in outputs), default=1.0, key=_nan_first),
        top1_agreement=min(top1, default=None),
        top5_containment=min((o.top5_containment for o in scores), default=None),
        confident_top1_agreement=min(confident, default=None),
        confident_samples=max((o.confident_samples for o in scores), default=0),
        worst_slice_cosine=min(slices, default=None, key=_nan_first),
        outputs=tuple(outputs),
    )


def _nan_first(value: float) -> float:
    """Orders a NaN below everything, so the worst figure is the one reported."""
    return -np.inf if np.isnan(value) else value
