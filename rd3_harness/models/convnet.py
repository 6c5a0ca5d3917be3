"""The ConvNet of the dataset-distillation literature (Zhao & Bilen's DC/DSA/MTT code).

Blocks of conv3x3 -> norm -> ReLU -> AvgPool2x2, then one linear layer. "instance" norm is the
literature's GroupNorm with one group per channel (affine). At 28x28 with one input channel the
first conv pads by 3 so features are 32x32, as the original does for MNIST.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = {"in": "instance", "bn": "batch", "none": "none"}


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "instance":
        return nn.GroupNorm(width, width, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: use instance, batch or none")


class ConvNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        resolution: int = 32,
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        size = resolution + 4 if (in_channels == 1 and resolution == 28) else resolution
        channels = in_channels
        for d in range(depth):
            padding = 3 if (d == 0 and size != resolution) else 1
            layers += [nn.Conv2d(channels, width, 3, padding=padding), _norm(norm, width), nn.ReLU(inplace=True)]
            if size >= 2:
                layers.append(nn.AvgPool2d(2, 2))
                size //= 2
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def convnet_factory(depth: int, width: int, norm: str):
    def build(num_classes: int, in_channels: int, resolution: int) -> nn.Module:
        return ConvNet(num_classes, in_channels, resolution, width=width, depth=depth, norm=NORMS[norm])

    return build
