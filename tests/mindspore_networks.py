"""Networks exported to MindIR by MindSpore itself, for the MindIR tests. Run with the hub-managed mindspore
environment's interpreter: `python tests/mindspore_networks.py OUT_DIR` writes cnn.mindir (asymmetric padding,
depthwise, batch norm, pooling, dense), mlp.mindir (dense layers with GeLU and Tanh) and residual.mindir (a
block with a residual add and a concat), with seeded weights and batch-norm statistics."""
from __future__ import annotations

import sys
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn, ops


class AsymmetricCNN(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, pad_mode="pad", padding=(0, 1, 0, 1), has_bias=True)
        self.stem_norm = nn.BatchNorm2d(16)
        self.depthwise = nn.Conv2d(16, 16, 3, pad_mode="same", group=16)
        self.depthwise_norm = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2, 2)
        self.project = nn.Conv2d(16, 24, 1, has_bias=True)
        self.relu6, self.relu = nn.ReLU6(), nn.ReLU()
        self.flatten = nn.Flatten()
        self.classifier = nn.Dense(24, 10)

    def construct(self, x):
        x = self.relu6(self.stem_norm(self.stem(x)))
        x = self.relu(self.depthwise_norm(self.depthwise(x)))
        x = self.project(self.pool(x))
        return self.classifier(self.flatten(ops.mean(x, (2, 3), keep_dims=True)))


class MLP(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Dense(64, 128)
        self.gelu = nn.GELU()
        self.middle = nn.Dense(128, 64, activation="tanh")
        self.out = nn.Dense(64, 10)

    def construct(self, x):
        return self.out(self.middle(self.gelu(self.hidden(x))))


class ResidualConcat(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, pad_mode="same", has_bias=True)
        self.left = nn.Conv2d(16, 8, 3, pad_mode="same", has_bias=True)
        self.right = nn.Conv2d(16, 8, 1, has_bias=True)
        self.merge = nn.Conv2d(16, 16, 1, has_bias=True)
        self.norm = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2, 2)
        self.classifier = nn.Dense(16, 10)

    def construct(self, x):
        x = self.relu(self.stem(x))
        branches = ops.concat((self.relu(self.left(x)), self.relu(self.right(x))), 1)
        x = self.relu(self.norm(self.merge(branches)) + x)
        x = self.pool(x)
        return self.classifier(ops.mean(x, (2, 3)))


NETWORKS = {"cnn": (AsymmetricCNN, (1, 3, 32, 32)), "mlp": (MLP, (1, 64)), "residual": (ResidualConcat, (1, 3, 16, 16))}


def seeded(network: nn.Cell, seed: int) -> nn.Cell:
    """Weights and batch-norm statistics drawn from a seed, so the exported numbers are not trivial."""
    rng = np.random.default_rng(seed)
    for parameter in network.get_parameters():
        shape = parameter.shape
        if "moving_variance" in parameter.name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "moving_mean" in parameter.name or "beta" in parameter.name or "bias" in parameter.name:
            value = rng.normal(0, 0.1, shape)
        elif "gamma" in parameter.name:
            value = rng.uniform(0.8, 1.2, shape)
        else:
            fan_in = int(np.prod(shape[1:])) or 1
            value = rng.normal(0, np.sqrt(2 / fan_in), shape)
        parameter.set_data(ms.Tensor(value.astype(np.float32)))
    network.set_train(False)
    return network


def main(out_dir: Path) -> None:
    ms.set_context(mode=ms.GRAPH_MODE)
    out_dir.mkdir(parents=True, exist_ok=True)
    for seed, (name, (network, shape)) in enumerate(NETWORKS.items()):
        example = ms.Tensor(np.zeros(shape, dtype=np.float32))
        ms.export(seeded(network(), seed), example, file_name=str(out_dir / name), file_format="MINDIR")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
