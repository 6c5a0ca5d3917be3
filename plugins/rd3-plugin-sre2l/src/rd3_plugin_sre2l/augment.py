"""The per-step augmentation of recovery: random-resized crop and flip of the whole batch, then a
random cyclic roll. Parameters are drawn from the run's CPU generator; one draw per batch, as
torchvision does for a 4-D tensor in the original scripts."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop parameters: (top, left, h, w)."""
    area = height * width
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), generator))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return _randint(0, height - h, generator), _randint(0, width - w, generator), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop_flip(x: torch.Tensor, scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """One random-resized crop (back to the input size, bilinear) and a flip with probability 1/2."""
    height, width = x.shape[-2:]
    top, left, h, w = crop_box(height, width, scale, generator)
    x = x[..., top : top + h, left : left + w]
    if (h, w) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    if float(torch.rand((), generator=generator)) < 0.5:
        x = x.flip(-1)
    return x


def random_roll(x: torch.Tensor, jitter: int, symmetric: bool, generator: torch.Generator) -> torch.Tensor:
    """Cyclic shift by (u, v) pixels, u and v uniform in 0..jitter (or -jitter..jitter)."""
    low = -jitter if symmetric else 0
    shifts = (_randint(low, jitter, generator), _randint(low, jitter, generator))
    return torch.roll(x, shifts=shifts, dims=(-2, -1))
