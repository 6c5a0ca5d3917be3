"""Statistics of the inputs of a teacher's BatchNorm and convolution layers: per channel and per
patch location, over a batch or per image, and the real-data reference values, cached per
(teacher weights, dataset, resolution)."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rd3_harness import weights_digest

STATS_BATCH = 256
FORMAT = 1


def hooked_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The BatchNorm2d and Conv2d modules whose inputs are matched, in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.Conv2d))]


def is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d)


@contextlib.contextmanager
def capture(layers: list[tuple[str, nn.Module]]) -> Iterator[list[torch.Tensor | None]]:
    """While open, the input of layer i in the latest forward pass is kept in slot i."""
    seen: list[torch.Tensor | None] = [None] * len(layers)

    def keeper(i: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            seen[i] = args[0]

        return hook

    handles = [m.register_forward_hook(keeper(i)) for i, (_, m) in enumerate(layers)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[N, C, H, W] resized up to multiples of `patch` -> [N, C, U, patch, V, patch]."""
    n, c, h, w = x.shape
    nh, nw = math.ceil(h / patch) * patch, math.ceil(w / patch) * patch
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    return x.reshape(n, c, nh // patch, patch, nw // patch, patch)


def _mean_var(x: torch.Tensor, dims: tuple[int, ...]) -> list[torch.Tensor]:
    """Mean and biased variance over `dims` (two passes; several times faster than `Tensor.var` on CPU)."""
    mean = x.mean(dims, keepdim=True)
    return [mean.squeeze(dims), (x - mean).pow(2).mean(dims)]


def batch_stats(x: torch.Tensor, patch: int | None) -> list[torch.Tensor]:
    """Channel mean and (biased) variance over (N, H, W); with `patch`, also the mean and variance
    of each patch location over (N, C, patch, patch) (G-VBSM's "patch" statistics)."""
    out = _mean_var(x, (0, 2, 3))
    if patch:
        out += [s.flatten() for s in _mean_var(_patches(x, patch), (0, 1, 3, 5))]
    return out


def image_stats(x: torch.Tensor, patch: int | None) -> list[torch.Tensor]:
    """The same statistics per image: [N, C] per channel over (H, W), [N, L] per patch over (C, p, p)."""
    out = _mean_var(x, (2, 3))
    if patch:
        out += [s.flatten(1) for s in _mean_var(_patches(x, patch), (1, 3, 5))]
    return out


class RealStats:
    """Reference statistics of one teacher on real data, per hooked layer i:
    `target(i)` = global targets (BatchNorm: its running mean and variance; convolution: channel
    and patch mean/variance over the whole image set) and `class_target(i, labels)` = the mean over
    `labels` of per-class averages of per-image statistics (EDC's category-aware targets)."""

    def __init__(self, layers: list[tuple[str, nn.Module]], tensors: dict[str, torch.Tensor]):
        self.layers, self.tensors = layers, tensors

    def target(self, i: int) -> list[torch.Tensor]:
        module = self.layers[i][1]
        if is_conv(module):
            return [self.tensors[f"{i}.global.{k}"] for k in range(4)]
        return [module.running_mean, module.running_var]

    def class_target(self, i: int, labels: torch.Tensor) -> list[torch.Tensor]:
        count = 4 if is_conv(self.layers[i][1]) else 2
        return [self.tensors[f"{i}.class.{k}"][labels].mean(0) for k in range(count)]


class _Moments:
    """Running sums of x and x^2 over some dimensions, for a population mean and variance."""

    def __init__(self, dims: tuple[int, ...]):
        self.dims, self.s1, self.s2, self.n = dims, 0.0, 0.0, 0

    def add(self, x: torch.Tensor) -> None:
        total = x.sum(self.dims)
        self.s1, self.s2 = self.s1 + total, self.s2 + x.pow(2).sum(self.dims)
        self.n += x.numel() // total.numel()

    def stats(self) -> list[torch.Tensor]:
        mean = self.s1 / self.n
        return [mean.flatten(), (self.s2 / self.n - mean**2).flatten()]


@torch.inference_mode()
def compute_real_stats(
    teacher: nn.Module, layers, real, num_classes: int, patch: int, images_per_class: int | None
) -> dict[str, torch.Tensor]:
    """One pass over the real images (the first `images_per_class` of each class, or all; every
    other image mirrored, the expectation of G-VBSM's random flips): population channel and patch
    mean/variance of each convolution input, and per-class means of per-image statistics of every
    hooked layer."""
    index = torch.cat([real.class_indices(c)[:images_per_class] for c in range(num_classes)])
    convs = {i: (_Moments((0, 2, 3)), _Moments((0, 1, 3, 5))) for i, (_, m) in enumerate(layers) if is_conv(m)}
    class_sums: dict[int, list[torch.Tensor]] = {}
    counts = torch.zeros(num_classes, dtype=torch.float64, device=real.device)
    for start in range(0, len(index), STATS_BATCH):
        chunk = index[start : start + STATS_BATCH]
        x = real.get(chunk)
        mirror = (torch.arange(start, start + len(chunk), device=x.device) % 2 == 1).view(-1, 1, 1, 1)
        y = real.labels[chunk].to(x.device)
        counts.index_add_(0, y, torch.ones(len(y), dtype=counts.dtype, device=counts.device))
        with capture(layers) as seen:
            teacher(torch.where(mirror, x.flip(3), x))
        for i, inp in enumerate(seen):
            inp = inp.double()
            if i in convs:
                convs[i][0].add(inp)
                convs[i][1].add(_patches(inp, patch))
            per_image = image_stats(inp, patch if i in convs else None)
            sums = class_sums.setdefault(
                i, [torch.zeros(num_classes, s.shape[1], dtype=s.dtype, device=s.device) for s in per_image]
            )
            for total, s in zip(sums, per_image):
                total.index_add_(0, y, s)
    out = {}
    for i, sums in class_sums.items():
        out |= {f"{i}.class.{k}": s / counts.clamp(min=1).view(-1, 1) for k, s in enumerate(sums)}
        if i in convs:
            out |= {f"{i}.global.{k}": s for k, s in enumerate(convs[i][0].stats() + convs[i][1].stats())}
    return {k: v.float().contiguous() for k, v in out.items()}


def real_stats(
    teacher: nn.Module,
    real,
    *,
    num_classes: int,
    patch: int,
    images_per_class: int | None,
    cache_dir: Path,
    dataset: str,
) -> RealStats:
    """The teacher's reference statistics, computed once and cached in `cache_dir` under a name
    that encodes its weights, the dataset, resolution, patch size and number of images used."""
    layers = hooked_layers(teacher)
    used = sum(min(len(real.class_indices(c)), images_per_class or len(real)) for c in range(num_classes))
    name = f"{dataset}-{real.resolution}px-{weights_digest(teacher)[:20]}-v{FORMAT}-p{patch}-{used}images"
    path = cache_dir / f"{name}.safetensors"
    if path.is_file():
        tensors = load_file(str(path), device=str(real.device))
    else:
        tensors = compute_real_stats(teacher, layers, real, num_classes, patch, images_per_class)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
    return RealStats(layers, tensors)
