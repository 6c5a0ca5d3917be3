"""The BN-statistics term: how far each BatchNorm layer's input batch is from its running statistics."""

from __future__ import annotations

import torch
from torch import nn


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer with running statistics, in module order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


class BNStatistics:
    """Forward hooks on every BatchNorm layer of a model (use as a context manager).

    Per layer: the per-channel mean and biased variance of the layer's input over all dimensions
    but the channel, and ||running_var - var||_2 + ||running_mean - mean||_2 (plain, not squared).
    Variants match other statistics by overriding `select` and `term`.
    """

    def __init__(self, model: nn.Module, first_multiplier: float = 10.0):
        self.layers = batchnorm_layers(model)
        self.weights = [first_multiplier] + [1.0] * (len(self.layers) - 1)
        self._terms: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def select(self, labels: torch.Tensor) -> None:
        """Called before the steps of a batch with these labels (the running statistics ignore them)."""

    def term(self, i: int, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The term of layer i for its input x."""
        dims = [0, *range(2, x.ndim)]
        mean, var = x.mean(dims), x.var(dims, correction=0)
        return torch.linalg.vector_norm(layer.running_var - var) + torch.linalg.vector_norm(layer.running_mean - mean)

    def _hook(self, i: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            self._terms[i] = self.term(i, module, args[0])

        return hook

    def __enter__(self) -> BNStatistics:
        self._handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def loss(self) -> torch.Tensor:
        """The weighted sum over layers of the last forward pass (first layer times its multiplier)."""
        if any(t is None for t in self._terms):
            raise RuntimeError("a BatchNorm layer was not reached by the forward pass")
        return sum(w * t for w, t in zip(self.weights, self._terms))
