"""SRe2L-style recovery, as DWA runs it: real images optimized against CE + r_bn x BatchNorm
statistics matching on the (adjusted) teacher, Adam (0.5, 0.9), cosine learning rate, clamping."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rd3_harness import Augmenter


@contextlib.contextmanager
def bn_inputs(model: nn.Module) -> Iterator[list[tuple[nn.BatchNorm2d, torch.Tensor]]]:
    """While open, the latest forward's (BatchNorm layer, its input) pairs, in call order."""
    seen: list[tuple[nn.BatchNorm2d, torch.Tensor]] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        seen.append((module, args[0]))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def bn_loss(seen: list[tuple[nn.BatchNorm2d, torch.Tensor]], r_var: float, first_multiplier: float) -> torch.Tensor:
    """Sum over BatchNorm layers of r_var * |running_var - var| + |running_mean - mean| (L2 norms,
    batch statistics of the layer's input over N, H, W), the first layer weighted `first_multiplier`."""
    total = 0.0
    for i, (bn, x) in enumerate(seen):
        mean = x.mean((0, 2, 3), keepdim=True)
        var = (x - mean).pow(2).mean((0, 2, 3))
        loss = r_var * torch.linalg.vector_norm(bn.running_var - var) + torch.linalg.vector_norm(
            bn.running_mean - mean.flatten()
        )
        total = total + (first_multiplier if i == 0 else 1.0) * loss
    return total


def optimize(
    ctx, teacher: nn.Module, x0: torch.Tensor, y: torch.Tensor, s: dict, augment: Augmenter, bar, adjust: Callable
):
    """Optimize one batch from `x0`; returns the last iterate and the per-step objective.
    `adjust(view)` is called once, with the first step's augmented and shifted batch, before that
    step's forward (where DWA adjusts the teacher's weights)."""
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=s["lr"], betas=(0.5, 0.9), eps=1e-8)
    trace = torch.zeros(s["iterations"], device=ctx.device)
    for it in range(s["iterations"]):
        for group in opt.param_groups:
            group["lr"] = 0.5 * (1 + math.cos(math.pi * it / s["iterations"])) * s["lr"]
        view = augment.apply(x, augment.draw(len(y), ctx.generator))
        if s["jitter"]:
            shift = torch.randint(0, s["jitter"] + 1, (2,), generator=ctx.generator).tolist()
            view = torch.roll(view, shift, dims=(2, 3))
        if it == 0:
            adjust(view.detach())
        with bn_inputs(teacher) as seen:
            out = teacher(view)
        loss = F.cross_entropy(out, y) + s["r_bn"] * bn_loss(seen, s["r_var"], s["first_bn_multiplier"])
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=[x])
        opt.step()
        with torch.no_grad():
            x.copy_(ctx.clamp(x))
        trace[it] = loss.detach()
        bar.advance(**({"loss": loss.item()} if it % 50 == 0 else {}))
    return x.detach(), trace.cpu()
