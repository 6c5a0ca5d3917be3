"""A registry plugin (no method): a tiny in-memory dataset, a model and a protocol file."""

from pathlib import Path

import torch
from torch import nn

from rd3_harness import DatasetInfo, TensorSplit, hookimpl


def _tiny(root: Path) -> tuple[TensorSplit, TensorSplit]:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(4).repeat(10)
    return TensorSplit(pixels[:32], labels[:32]), TensorSplit(pixels[32:], labels[32:])


@hookimpl
def register_datasets(register):
    register(
        DatasetInfo(
            name="kit-tiny",
            num_classes=4,
            channels=1,
            resolution=8,
            mean=(0.5,),
            std=(0.25,),
            candidates=lambda root: [root],
            is_present=lambda folder: True,
            load=_tiny,
            how_to_get="nothing to get: made in memory",
        )
    )


@hookimpl
def register_models(register):
    def mlp(num_classes: int, in_channels: int, resolution: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * resolution**2, num_classes))

    register("kit-mlp", mlp, description="one linear layer (kit tests)")


@hookimpl
def register_protocols(register):
    register("kit/smoke-copy.v1", Path(__file__).with_name("smoke-copy.v1.yaml"))
