"""Tiny models for the plugin tests, importable by "fixtures_models:function" (tests/ is on sys.path)."""
from __future__ import annotations

import torch


class TinyConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3)
        self.head = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(image))
        return self.head(features.flatten(1))


class TwoInputNet(torch.nn.Module):
    """Two named inputs and a nested output, to check names and output flattening."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict:
        return {"scores": self.linear(features) * mask, "extras": [features.sum(dim=1)]}


def make_tiny_conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyConvNet()


class TinyDetector(torch.nn.Module):
    """A detector's output shape in miniature: 16 anchors, each with a box (4 values in [0, 1]) and 3 class
    scores, as two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.boxes = torch.nn.Conv2d(16, 4, 1)
        self.scores = torch.nn.Conv2d(16, 3, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(image)
        boxes = torch.sigmoid(self.boxes(features)).flatten(2).transpose(1, 2)
        scores = self.scores(features).flatten(2).transpose(1, 2)
        return boxes, scores


def make_tiny_detector() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyDetector().eval()
