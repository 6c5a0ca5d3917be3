"""Directed weight adjustment: move a teacher's weights along the normalized gradient of its loss
on a random real subset (DWA's `Perterb.first_step`, repeated `steps` times with rho / steps each),
and put them back exactly afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def directed_adjustment(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rho: float, steps: int) -> Iterator[float]:
    """Inside the block the weights are w + delta, where delta is built from `steps` moves of length
    rho / steps, each along the gradient of CE(model(x), y) at the current weights divided by its
    norm (so |delta| <= rho, = rho when steps is 1). Yields |delta|. On exit every parameter gets
    its saved value and `requires_grad` flag back, bit for bit."""
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        for _ in range(steps):
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, allow_unused=True)
            pairs = [(p, g) for p, g in zip(params, grads) if g is not None]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for _, g in pairs]))
            with torch.no_grad():
                for p, g in pairs:
                    p.add_(g * (rho / steps / (norm + 1e-12)))
        with torch.no_grad():
            delta = torch.stack([torch.linalg.vector_norm(p - s) for p, s in zip(params, saved)])
        yield float(torch.linalg.vector_norm(delta))
    finally:
        with torch.no_grad():
            for p, s, flag in zip(params, saved, flags):
                p.copy_(s)
                p.requires_grad_(flag)
