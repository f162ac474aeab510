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
