"""Class-conditional BatchNorm statistics: computed from real data through the teacher (cached),
and matched class by class during recovery."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from rd3_plugin_sre2l.bn import BNStatistics, batchnorm_layers
from torch import nn

from rd3_harness import SynthesisContext, weights_digest

STATS_BATCH = 500
ClassStats = list[tuple[torch.Tensor, torch.Tensor]]
"""Per BN layer: (mean [classes, C], biased var [classes, C]) of the layer's input."""


def class_layout(num_classes: int, ipc: int, batch_size: int) -> list[torch.Tensor]:
    """Batches of whole classes: `batch_size // ipc` classes x all their ipc images per batch, or
    one class in chunks of `batch_size` when ipc is larger."""
    if ipc >= batch_size:
        return [
            torch.full((min(batch_size, ipc - k),), c) for c in range(num_classes) for k in range(0, ipc, batch_size)
        ]
    per_batch = batch_size // ipc
    classes = torch.arange(num_classes)
    return [classes[k : k + per_batch].repeat_interleave(ipc) for k in range(0, num_classes, per_batch)]


@torch.no_grad()
def compute_class_statistics(
    teacher: nn.Module, real_data, pools: list[torch.Tensor], device: torch.device, progress
) -> ClassStats:
    """Exact per-class mean and biased variance of every BN layer's input over the images in `pools`."""
    layers = batchnorm_layers(teacher)
    sums = [torch.zeros(len(pools), layer.num_features, dtype=torch.float64) for layer in layers]
    squares = [torch.zeros_like(s) for s in sums]
    counts = torch.zeros(len(layers), len(pools), dtype=torch.float64)
    captured: list[tuple[torch.Tensor, torch.Tensor, int] | None] = [None] * len(layers)

    def hook(i: int):
        def capture(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            x = args[0].reshape(args[0].shape[0], args[0].shape[1], -1)
            captured[i] = (x.sum((0, 2)).double().cpu(), x.square().sum((0, 2)).double().cpu(), x.shape[0] * x.shape[2])

        return capture

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        with progress(sum(len(p) for p in pools), "lpld: class-wise BN statistics") as task:
            for c, pool in enumerate(pools):
                for chunk in pool.split(STATS_BATCH):
                    teacher(real_data.get(chunk).to(device))
                    for i, (total, total_square, n) in enumerate(captured):
                        sums[i][c] += total
                        squares[i][c] += total_square
                        counts[i, c] += n
                    task.advance(len(chunk))
    finally:
        for handle in handles:
            handle.remove()
    out = []
    for i in range(len(layers)):
        mean = sums[i] / counts[i, :, None]
        var = (squares[i] / counts[i, :, None] - mean.square()).clamp_min(0)
        out.append((mean.float().to(device), var.float().to(device)))
    return out


def _digest(ctx: SynthesisContext, teacher: nn.Module, pools: list[torch.Tensor]) -> str:
    """What the statistics depend on: teacher weights, dataset, input space and the images used."""
    h = hashlib.sha256(weights_digest(teacher).encode())
    probe = ctx.normalize(torch.tensor([0.0, 1.0]).view(1, 1, 2, 1).expand(1, ctx.image_shape[0], 2, 1).to(ctx.device))
    h.update(json.dumps([ctx.dataset, list(ctx.image_shape), probe.flatten().tolist()]).encode())
    for pool in pools:
        h.update(pool.cpu().numpy().tobytes())
    return h.hexdigest()


def class_statistics(ctx: SynthesisContext, teacher: nn.Module, pool: int | None) -> tuple[ClassStats, bool]:
    """The class statistics over `pool` random images per class (None: all), from `ctx.cache_dir`
    when an identical computation was cached; returns them and whether the cache was used."""
    pools = [
        ctx.real_data.class_indices(c)
        if pool is None or pool >= len(ctx.real_data.class_indices(c))
        else ctx.real_data.sample_indices(c, pool, ctx.generator)
        for c in range(ctx.num_classes)
    ]
    path = Path(ctx.cache_dir) / f"class-bn-statistics-{_digest(ctx, teacher, pools)[:24]}.pt"
    if path.is_file():
        saved = torch.load(path, map_location=ctx.device, weights_only=True)
        return list(zip(saved["mean"], saved["var"])), True
    stats = compute_class_statistics(teacher, ctx.real_data, pools, ctx.device, ctx.progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"mean": [m.cpu() for m, _ in stats], "var": [v.cpu() for _, v in stats]}, partial)
    partial.replace(path)
    return stats, False


class ClassBNStatistics(BNStatistics):
    """Matches each class's images to that class's statistics: per layer, the mean over the classes
    in the batch of ||var_c - var(x_c)||_2 + ||mean_c - mean(x_c)||_2. With equally many images per
    class in a batch this equals LPLD's one-class batches (up to the scale Adam ignores)."""

    def __init__(self, model: nn.Module, statistics: ClassStats, first_multiplier: float = 10.0):
        super().__init__(model, first_multiplier)
        if len(statistics) != len(self.layers):
            raise ValueError(f"{len(statistics)} layers of class statistics for {len(self.layers)} BatchNorm layers")
        self.statistics = statistics

    def select(self, labels: torch.Tensor) -> None:
        self._classes, self._groups = labels.unique(return_inverse=True)
        members = F.one_hot(self._groups, len(self._classes)).T.float()
        self._average = members / members.sum(1, keepdim=True)  # [classes in batch, N]

    def term(self, i: int, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        per_image = x.reshape(x.shape[0], x.shape[1], -1)
        mean = self._average @ per_image.mean(2)
        var = self._average @ (per_image - mean[self._groups].unsqueeze(2)).square().mean(2)
        target_mean, target_var = (s[self._classes] for s in self.statistics[i])
        distance = torch.linalg.vector_norm(target_var - var, dim=1) + torch.linalg.vector_norm(
            target_mean - mean, dim=1
        )
        return distance.mean()
