"""Fidelity of an artifact against the source: the same inputs through both, outputs compared."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hub.declarations import Tolerance

CONFIDENT_SOFTMAX = 0.5


@dataclass(frozen=True)
class Fidelity:
    """max_abs: largest absolute difference over all outputs and samples. cosine: mean over samples and
    outputs of the cosine between flattened outputs. For outputs shaped (1, classes): top1_agreement (same
    arg-max), top5_containment (the source's top-1 among the artifact's top 5), confident_top1_agreement
    (top-1 agreement on samples where the source's softmax exceeds 0.5; None when there are none)."""

    samples: int
    max_abs: float
    cosine: float
    top1_agreement: float | None = None
    top5_containment: float | None = None
    confident_top1_agreement: float | None = None
    confident_samples: int = 0

    def to_json(self) -> dict:
        return {
            "samples": self.samples,
            "max_abs": _rounded(self.max_abs),
            "cosine": _rounded(self.cosine),
            "top1_agreement": _rounded(self.top1_agreement),
            "top5_containment": _rounded(self.top5_containment),
            "confident_top1_agreement": _rounded(self.confident_top1_agreement),
            "confident_samples": self.confident_samples,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Fidelity":
        return cls(**data)

    def violations(self, tolerance: Tolerance) -> list[str]:
        found = []
        if not self.cosine >= tolerance.min_cosine:  # written so that a NaN cosine fails too
            found.append(f"cosine {self.cosine:.5f} < {tolerance.min_cosine}")
        if tolerance.min_top1 is not None and self.top1_agreement is not None \
                and self.top1_agreement < tolerance.min_top1:
            found.append(f"top-1 agreement {self.top1_agreement:.3f} < {tolerance.min_top1}")
        if tolerance.max_abs is not None and not self.max_abs <= tolerance.max_abs:
            found.append(f"max-abs {self.max_abs:.3g} > {tolerance.max_abs}")
        return found


def _rounded(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


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


def _looks_like_scores(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.shape[0] == 1 and array.shape[1] > 1


def _softmax_max(logits: np.ndarray) -> float:
    shifted = logits.astype(np.float64) - logits.max()
    probabilities = np.exp(shifted) / np.exp(shifted).sum()
    return float(probabilities.max())


def compare(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> Fidelity:
    """Compare per-sample output lists; raises ValueError when they do not line up."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(candidate)} output sets for {len(reference)} samples")
    max_abs, cosines, top1, top5, confident = 0.0, [], [], [], []
    for ref_outputs, cand_outputs in zip(reference, candidate):
        if len(ref_outputs) != len(cand_outputs):
            raise ValueError(f"the artifact has {len(cand_outputs)} outputs, the source {len(ref_outputs)}")
        for ref, cand in zip(ref_outputs, cand_outputs):
            if ref.size != cand.size:
                raise ValueError(f"an output has {cand.size} values where the source has {ref.size}")
            cand = cand.reshape(ref.shape).astype(np.float64)
            max_abs = max(max_abs, max_abs_difference(ref, cand))
            cosines.append(cosine(ref, cand))
            if _looks_like_scores(ref):
                source_class = int(np.argmax(ref))
                agrees = source_class == int(np.argmax(cand))
                top1.append(agrees)
                top5.append(source_class in np.argsort(-cand[0])[:5])
                if _softmax_max(ref[0]) > CONFIDENT_SOFTMAX:
                    confident.append(agrees)
    return Fidelity(
        samples=len(reference),
        max_abs=max_abs,
        cosine=float(np.mean(cosines)) if cosines else 1.0,
        top1_agreement=float(np.mean(top1)) if top1 else None,
        top5_containment=float(np.mean(top5)) if top5 else None,
        confident_top1_agreement=float(np.mean(confident)) if confident else None,
        confident_samples=len(confident),
    )
