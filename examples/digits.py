"""Train a small CNN on scikit-learn's bundled digits (seconds on a CPU) and write what `make demo` converts:
digits.pt2 (torch.export), calib.npz (calibration samples keyed by input name) and heldout.npz."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(32, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image).flatten(1))


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    return images, digits.target.astype(np.int64)


def train(images: np.ndarray, labels: np.ndarray, epochs: int = 12, seed: int = 0) -> DigitsNet:
    torch.manual_seed(seed)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    data, targets = torch.from_numpy(images), torch.from_numpy(labels)
    for _ in range(epochs):
        order = torch.randperm(len(data))
        for start in range(0, len(data), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(data[batch]), targets[batch]).backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="examples/build", help="folder for digits.pt2 and calib.npz")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = digits_arrays()
    train_images, train_labels = images[:1400], labels[:1400]
    model = train(train_images, train_labels)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(images[1400:])).argmax(1).numpy() == labels[1400:]).mean()
    program = torch.export.export(model, (torch.from_numpy(images[:1]),))
    torch.export.save(program, out / "digits.pt2")
    np.savez(out / "calib.npz", image=train_images[:128])
    np.savez(out / "heldout.npz", image=images[1400:], label=labels[1400:])
    print(f"trained DigitsNet: held-out accuracy {accuracy:.1%}; wrote {out}/digits.pt2, calib.npz, heldout.npz")


if __name__ == "__main__":
    main()
