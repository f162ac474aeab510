"""Sample inputs for calibration and verification: .npz, .npy, a folder of images, or seeded random data.

Samples are kept as one array per input name with the samples along the first axis; each sample is fed to
a model as a batch of one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hub.errors import MissingDependencyError, UsageError
from hub.states import TensorSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
RANDOM_SEED = 0
RANDOM_SAMPLES = 16


def one_sample(array: np.ndarray, index: int, rank: int) -> np.ndarray:
    """Sample `index` of an array holding samples along axis 0, for an input of `rank` dimensions: stacked
    batches of one (array.ndim == rank, the usual case) or whole inputs (array.ndim == rank + 1, for inputs whose
    first dimension is not a batch of one: vectors, scalars, fixed batches)."""
    # np.asarray: indexing a stacked scalar input gives a NumPy scalar, which ONNX Runtime refuses as a feed
    return array[index:index + 1] if array.ndim == rank else np.asarray(array[index])


@dataclass(frozen=True)
class SampleSet:
    arrays: dict[str, np.ndarray]
    origin: str  # how the samples were made, for the report
    ranks: dict[str, int]  # each input's rank: tells stacked batches of one from whole inputs

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def feeds(self, limit: int | None = None) -> list[dict[str, np.ndarray]]:
        count = self.count if limit is None else min(limit, self.count)
        return [{name: one_sample(value, i, self.ranks[name]) for name, value in self.arrays.items()}
                for i in range(count)]

    def held_out(self, count: int) -> tuple["SampleSet", "SampleSet"]:
        """(calibration, verification): `count` samples spread evenly through the file held out for verification
        when at least as many remain to calibrate on; else the same samples for both (too few to spare any).
        Spread, not the last ones: a file of chunks in time order (a voice detector's 32 ms steps, video frames)
        held out at its end calibrated Silero VAD on silence and verified it on speech, whose logits the int8
        ranges then clipped at a probability of 0.5."""
        if self.count < 2 * count:
            return self, self
        verify = np.zeros(self.count, dtype=bool)
        verify[np.floor((np.arange(count) + 0.5) * self.count / count).astype(int)] = True
        return (SampleSet({name: value[~verify] for name, value in self.arrays.items()}, self.origin, self.ranks),
                SampleSet({name: value[verify] for name, value in self.arrays.items()}, self.origin, self.ranks))


def with_sample_shapes(specs: tuple[TensorSpec, ...], samples: SampleSet) -> tuple[TensorSpec, ...]:
    """The specs with their dynamic dimensions taken from the samples' shapes: every step that needs static
    shapes (onnx2tf, MindIR, calibration) then sees the shapes the model is verified on."""
    concrete = []
    for spec in specs:
        array = samples.arrays.get(spec.name)
        if array is None or None not in spec.shape:
            concrete.append(spec)
            continue
        batch_of_one = array.ndim == len(spec.shape)  # samples stacked along the batch axis
        shape = (1, *array.shape[1:]) if batch_of_one else array.shape[1:]
        concrete.append(replace(spec, shape=tuple(d if d is not None else int(s) for d, s in zip(spec.shape, shape))))
    return tuple(concrete)


def parse_input_flag(text: str) -> TensorSpec:
    """NAME:SHAPE[:DTYPE], e.g. "x:1,3,224,224" or "ids:1,128:int64"; "?" or -1 marks a dynamic dimension. The
    name may hold colons itself (TensorFlow's "serving_default_x:0:1,224,224,3")."""
    match = re.fullmatch(r"(.+):([0-9?,x -]+)(?::([a-z0-9]+))?", text.strip())
    if not match:
        raise UsageError(f"--input {text!r} is not NAME:SHAPE[:DTYPE], e.g. x:1,3,224,224:float32")
    name, shape_text, dtype = match.groups()
    shape = tuple(None if d.strip() == "?" else int(d) for d in re.split(r"[,x]", shape_text) if d.strip())
    try:
        np.dtype(dtype or "float32")
    except TypeError as error:
        raise UsageError(f"--input {text!r}: unknown dtype {dtype!r}") from error
    return TensorSpec(name, shape, dtype or "float32")


def merge_specs(declared: tuple[TensorSpec, ...], given: list[TensorSpec]) -> tuple[TensorSpec, ...]:
    """The model's own input specs, with the user's --input flags taking precedence by name."""
    by_name = {spec.name: spec for spec in given}
    unknown = set(by_name) - {spec.name for spec in declared}
    if declared and unknown:
        raise UsageError(f"--input names {sorted(unknown)} are not inputs of the model; "
                         f"its inputs are {[s.name for s in declared]}")
    return tuple(by_name.get(spec.name, spec) for spec in declared) if declared else tuple(given)


def load_samples(path: Path, specs: tuple[TensorSpec, ...]) -> SampleSet:
    if not path.exists():
        raise UsageError(f"calibration data {path} does not exist")
    if path.is_dir():
        return _load_image_folder(path, specs)
    try:
        if path.suffix == ".npy":
            arrays = {_only_input(specs, path).name: np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError, EOFError) as error:
        raise UsageError(f"cannot read calibration data {path}: expected .npz, .npy or a folder of images",
                         detail=str(error)) from error
    if len(arrays) == 1 and len(specs) == 1:
        arrays = {specs[0].name: next(iter(arrays.values()))}
    return SampleSet(_check_arrays(arrays, specs, path), f"{path.name}", _ranks(specs))


def _only_input(specs: tuple[TensorSpec, ...], path: Path) -> TensorSpec:
    if len(specs) != 1:
        raise UsageError(f"{path} holds one array but the model has {len(specs)} inputs: use an .npz keyed by "
                         f"input name ({', '.join(s.name for s in specs)})")
    return specs[0]


def _check_arrays(arrays: dict[str, np.ndarray], specs: tuple[TensorSpec, ...], path: Path) -> dict:
    checked = {}
    for spec in specs:
        if spec.name not in arrays:
            raise UsageError(f"{path} has no array named {spec.name!r} (it has {sorted(arrays)}); "
                             "key the .npz by the model's input names")
        checked[spec.name] = _with_sample_axis(arrays[spec.name], spec, path).astype(_stored_dtype(spec.dtype),
                                                                                   copy=False)
    return checked


def _stored_dtype(dtype: str) -> np.dtype:
    """The dtype samples are kept in: a string input (numpy "object") as unicode, which an .npz holds without
    pickling and ONNX Runtime takes as strings."""
    return np.dtype(np.str_) if np.dtype(dtype) == np.dtype(object) else np.dtype(dtype)


def _fits(shape: tuple[int, ...], wanted: tuple[int | None, ...]) -> bool:
    return len(shape) == len(wanted) and all(w is None or w == d for d, w in zip(shape, wanted))


def _with_sample_axis(array: np.ndarray, spec: TensorSpec, path: Path) -> np.ndarray:
    """The array with samples along axis 0, either as stacked batches of one or as whole inputs."""
    batch_of_one = bool(spec.shape) and spec.shape[0] in (1, None)
    if batch_of_one and array.ndim == len(spec.shape) - 1 and _fits(array.shape, spec.shape[1:]):
        return array[None]  # one sample given without its batch axis
    if batch_of_one and _fits(array.shape[1:], spec.shape[1:]) and array.ndim == len(spec.shape):
        return array
    if array.ndim == len(spec.shape) + 1 and _fits(array.shape[1:], spec.shape):
        return array
    if not batch_of_one and _fits(array.shape, spec.shape):
        return array[None]
    wanted = ", ".join(str(d) for d in (spec.shape[1:] if batch_of_one else spec.shape))
    raise UsageError(f"{path}: array {spec.name!r} has shape {array.shape}, the model wants (samples, {wanted})")


def _load_image_folder(folder: Path, specs: tuple[TensorSpec, ...]) -> SampleSet:
    try:
        from PIL import Image
    except ImportError as error:
        raise MissingDependencyError("reading a folder of images needs Pillow: pip install 'conversion-hub[images]'"
                                     ) from error
    spec = _only_input(specs, folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    channels_first = len(spec.shape) == 4 and spec.shape[1] in (1, 3)
    channels, height, width = spec.shape[1:] if channels_first else (spec.shape[3], *spec.shape[1:3])
    if None in (channels, height, width):
        raise UsageError(f"input {spec.name!r} has a dynamic image size: give it with --input")
    images = []
    for file in files:
        with Image.open(file) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
        array = array[..., None] if array.ndim == 2 else array
        images.append(array.transpose(2, 0, 1) if channels_first else array)
    origin = (f"{len(files)} images from {folder.name}/: resized to {height}x{width} (bilinear), "
              f"{'grayscale' if channels == 1 else 'RGB'}, scaled to [0, 1], "
              f"{'NCHW' if channels_first else 'NHWC'}, no mean/std normalisation")
    return SampleSet({spec.name: np.stack(images).astype(spec.dtype)}, origin, _ranks(specs))


def random_samples(specs: tuple[TensorSpec, ...], count: int = RANDOM_SAMPLES) -> SampleSet:
    """Seeded standard-normal samples (integers in [0, 10) for integer inputs) of the declared shapes."""
    generator = np.random.default_rng(RANDOM_SEED)
    arrays = {}
    for spec in specs:
        if any(d is None for d in spec.shape[1:]):
            raise UsageError(f"input {spec.name!r} has dynamic dimensions {spec.shape}: give a shape with "
                             f"--input {spec.name}:1,... or pass --calibration data")
        batch_of_one = bool(spec.shape) and spec.shape[0] in (1, None)
        shape = (count, *(spec.shape[1:] if batch_of_one else spec.shape))
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            arrays[spec.name] = generator.integers(0, 10, size=shape).astype(spec.dtype)
        else:
            arrays[spec.name] = generator.standard_normal(shape).astype(spec.dtype)
    return SampleSet(arrays, f"{count} seeded random samples (seed {RANDOM_SEED})", _ranks(specs))


def _ranks(specs: tuple[TensorSpec, ...]) -> dict[str, int]:
    return {spec.name: len(spec.shape) for spec in specs}
