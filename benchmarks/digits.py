"""The second dataset of the compression benchmark: scikit-learn's handwritten digits (8x8, offline).

A small all-convolution classifier (the same layer kinds as the detector: conv, batch norm, ReLU) is
trained in seconds, then compressed to every codebook twice, by plain projection and by ADMM, so the
ordering of the codebooks can be compared with the detector's on real data.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

SEED = 0
TEST_FRACTION = 0.25


@dataclass
class DigitsData:
    train: TensorDataset
    test: TensorDataset


def load() -> DigitsData:
    """The 1,797 digits as (N, 1, 8, 8) floats in [0, 1], split 75/25 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=TEST_FRACTION, random_state=SEED, stratify=digits.target
    )
    as_dataset = lambda x, y: TensorDataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))  # noqa: E731
    return DigitsData(as_dataset(x_train, y_train), as_dataset(x_test, y_test))


def conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class DigitsNet(nn.Module):
    """8x8 -> 8x8 -> 4x4 -> 2x2 feature maps, then a 2x2 convolution to the 10 class logits.

    Narrow on purpose (8, 16, 16 channels): a wide network has so much slack that every codebook scores
    alike on 450 test digits, and the comparison would say nothing.
    """

    def __init__(self, widths: tuple[int, int, int] = (8, 16, 16)):
        super().__init__()
        a, b, c = widths
        self.features = nn.Sequential(conv_bn_relu(1, a, 1), conv_bn_relu(a, b, 2), conv_bn_relu(b, c, 2))
        self.classifier = nn.Conv2d(c, 10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, 10, 1, 1): the integer IR has no reshape, so callers flatten the logits themselves.
        return self.classifier(self.features(x))


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    images, labels = batch
    return nn.functional.cross_entropy(model(images).flatten(1), labels)


def loader(dataset: TensorDataset, batch_size: int = 64) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(SEED))


def train(data: DigitsData, epochs: int = 30) -> DigitsNet:
    """The fp32 classifier, seeded; a few seconds on one core."""
    torch.manual_seed(SEED)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        model.train()
        for batch in loader(data.train):
            optimizer.zero_grad()
            loss_fn(model, batch).backward()
            optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, dataset: TensorDataset) -> float:
    model.eval()
    images, labels = dataset.tensors
    return float((model(images).flatten(1).argmax(1) == labels).float().mean())
