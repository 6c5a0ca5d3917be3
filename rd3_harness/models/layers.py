"""Small wrapper modules."""

from __future__ import annotations

import torch
from torch import nn


class ChannelRepeat(nn.Module):
    """Feeds a 1-channel input to a 3-channel torchvision model by repeating the channel."""

    def __init__(self, model: nn.Module, channels: int = 3):
        super().__init__()
        self.channels, self.model = channels, model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.expand(-1, self.channels, -1, -1))
