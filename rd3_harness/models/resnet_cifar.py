"""ResNets with the CIFAR stem (3x3 stride-1 first conv, no max-pool): SRe2L's and RDED's
"resnet18_modified", for 32 and 64 px data."""

from __future__ import annotations

import torchvision
from torch import nn


def resnet_cifar_factory(arch: str):
    def build(num_classes: int, in_channels: int, resolution: int) -> nn.Module:
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
        return model

    return build
