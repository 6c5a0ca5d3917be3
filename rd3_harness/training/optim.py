"""Optimizers and learning-rate schedules from their protocol specs."""

from __future__ import annotations

import math

import torch
from torch import nn

from rd3_harness.protocol.schema import SGD, Adam, AdamW, Constant, Cosine, MultiStep, Step


def build_optimizer(spec: AdamW | Adam | SGD, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if getattr(spec, "no_decay_1d", False):
        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": spec.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": params, "weight_decay": spec.weight_decay}]
    if isinstance(spec, AdamW):
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
    if isinstance(spec, Adam):
        return torch.optim.Adam(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
    return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov)


def lr_multiplier(spec: Cosine | Step | MultiStep | Constant, epoch: float, epochs: int) -> float:
    """Multiplier of the base learning rate at (possibly fractional) epoch `epoch` (0-based).

    Linear warm-up over `warmup_epochs` from 1/(W+1), then the schedule over the remaining
    epochs: cosine mu(e) = 1/2 (1 + cos(pi e / (zeta E))), step, multistep or constant.
    """
    warm = spec.warmup_epochs
    if epoch < warm:
        return (epoch + 1) / (warm + 1)
    e, total = epoch - warm, epochs - warm
    if isinstance(spec, Cosine):
        return 0.5 * (1 + math.cos(math.pi * min(e / (spec.zeta * total), 1.0)))
    if isinstance(spec, Step):
        return spec.gamma ** math.floor(e / spec.step_size)
    if isinstance(spec, MultiStep):
        return spec.gamma ** sum(1 for m in spec.milestones if m <= epoch)
    return 1.0


class Scheduler:
    """Sets the learning rate before each step from the schedule (per epoch or per step)."""

    def __init__(self, optimizer: torch.optim.Optimizer, spec, epochs: int, steps_per_epoch: int):
        self.optimizer, self.spec, self.epochs, self.steps = optimizer, spec, epochs, steps_per_epoch
        self.base = [g["lr"] for g in optimizer.param_groups]

    def set(self, epoch: int, step: int) -> float:
        at = epoch + (step / self.steps if self.spec.per == "step" else 0.0)
        mult = lr_multiplier(self.spec, at, self.epochs)
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * mult
        return mult
