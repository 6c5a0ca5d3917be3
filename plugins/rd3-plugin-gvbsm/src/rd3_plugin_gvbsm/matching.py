"""G-VBSM's losses: statistics matching with an EMA of the synthetic statistics, and the
data-densification term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rd3_plugin_gvbsm.statistics import RealStats, batch_stats, is_conv


class Matcher:
    """Per-layer distance between real and synthetic statistics of one teacher.

    The synthetic statistic is an EMA over iterations whose gradient flows only through the
    current batch (straight-through: EMA + cur - stopgrad(cur)). Each layer's loss is the sum of
    L2 distances over its statistics (channel mean, variance; for convolutions also patch mean,
    variance) to the global targets, blended with the class-conditional targets by
    `category_weight` (EDC's soft category-aware matching; 0 in G-VBSM)."""

    def __init__(self, real: RealStats, *, momentum: float, patch: int, category_weight: float = 0.0):
        self.real, self.momentum, self.patch, self.category_weight = real, momentum, patch, category_weight
        self.reset()

    def reset(self) -> None:
        """Forget the EMA (at the start of each batch)."""
        self.ema: list[list[torch.Tensor] | None] = [None] * len(self.real.layers)
        self._class_targets: dict[int, tuple[torch.Tensor, list[torch.Tensor]]] = {}

    def _class_target(self, i: int, labels: torch.Tensor) -> list[torch.Tensor]:
        """Layer i's class-conditional targets for this batch's labels, computed once per batch."""
        cached = self._class_targets.get(i)
        if cached is None or cached[0] is not labels:
            cached = self._class_targets[i] = (labels, self.real.class_target(i, labels))
        return cached[1]

    def losses(self, inputs: list[torch.Tensor], labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """One loss per layer from the layers' inputs; convolution layers with `keep[i]` False are
        dropped this step (loss 0, EMA unchanged)."""
        out = []
        for i, x in enumerate(inputs):
            conv = is_conv(self.real.layers[i][1])
            if conv and not keep[i]:
                out.append(x.new_zeros(()))
                continue
            cur = batch_stats(x, self.patch if conv else None)
            ema = self.ema[i]
            ema = (
                [c.detach() for c in cur]
                if ema is None
                else [self.momentum * e + (1 - self.momentum) * c.detach() for e, c in zip(ema, cur)]
            )
            self.ema[i] = ema
            synth = [e + c - c.detach() for e, c in zip(ema, cur)]
            loss = _distance(self.real.target(i), synth)
            if self.category_weight:
                per_class = _distance(self._class_target(i, labels), synth)
                loss = (1 - self.category_weight) * loss + self.category_weight * per_class
            out.append(loss)
        return torch.stack(out)


def _distance(targets: list[torch.Tensor], synth: list[torch.Tensor]) -> torch.Tensor:
    return sum(torch.linalg.vector_norm(t - s) for t, s in zip(targets, synth))


def densification_loss(x: torch.Tensor, runs: list[int], tau: float) -> torch.Tensor:
    """G-VBSM's L_DD for a batch whose labels come in runs of one class (`runs`: their lengths):
    per class, the eigenvalues of the Gram matrix of its images (pooled to at most 32 x 32,
    flattened); KL(softmax(lambda / tau) || softmax(lambda)), the tempered spectrum a fixed
    target, summed over classes."""
    flat = F.adaptive_avg_pool2d(x, min(32, x.shape[-1])).flatten(1)
    total = x.new_zeros(())
    for f in flat.split(runs):
        if len(f) < 2:
            continue
        lam = torch.linalg.eigvalsh(f @ f.T)
        total = total + F.kl_div(lam.log_softmax(0), (lam / tau).softmax(0).detach(), reduction="sum")
    return total
