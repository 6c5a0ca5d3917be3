"""Recovery: optimize noise so the teacher classifies it as its label while the BatchNorm input
statistics of the batch match the teacher's running statistics."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rd3_harness import SynthesisContext, SyntheticSet, UsageError
from rd3_plugin_sre2l.augment import random_resized_crop_flip, random_roll
from rd3_plugin_sre2l.bn import BNStatistics, batchnorm_layers
from rd3_plugin_sre2l.config import MIN_SCALE, Recipe

TRACE_POINTS = 101


def layout(num_classes: int, ipc: int, batch_size: int) -> list[torch.Tensor]:
    """The labels of each optimization batch: per IPC index, the classes in chunks of `batch_size`
    (one image each), as the reference's loop over `ipc_id` and class chunks runs them."""
    classes = torch.arange(num_classes)
    return [classes[k : k + batch_size] for _ in range(ipc) for k in range(0, num_classes, batch_size)]


def cosine_lr(base: float, t: int, iterations: int) -> float:
    """The learning rate at step t: base * 1/2 (1 + cos(pi t / T)), no warmup."""
    return base * 0.5 * (1 + math.cos(math.pi * t / iterations))


def bn_teacher(ctx: SynthesisContext, method: str) -> nn.Module:
    """The protocol's teacher, or a UsageError that says what to use when it has no BatchNorm."""
    teacher = ctx.teacher
    if teacher is None or not batchnorm_layers(teacher):
        name = type(teacher).__name__ if teacher is not None else "none"
        raise UsageError(
            f"{method} matches BatchNorm statistics, but the protocol's teacher ({name}) has no BatchNorm layer "
            "with running statistics: use a protocol whose teacher has BatchNorm (e.g. convnet_d3_w32_bn, resnet18)"
        )
    return teacher


def recover(
    ctx: SynthesisContext,
    recipe: Recipe,
    *,
    method: str = "sre2l",
    min_scale: Callable[[int], float] = lambda t: MIN_SCALE,
    batches: list[torch.Tensor] | None = None,
    bn: BNStatistics | None = None,
) -> SyntheticSet:
    """Recover `ctx.ipc` images per class with `recipe`; `min_scale(t)` is the lower bound of the
    crop scale at step t (used when `recipe.crop`). `batches` (the labels of each batch; default
    `layout`) and `bn` (the statistics to match; default the teacher's running statistics) let
    variants change the layout and the targets. The objective trace goes to `meta`."""
    teacher = bn_teacher(ctx, method)
    batches = batches if batches is not None else layout(ctx.num_classes, ctx.ipc, recipe.batch_size)
    bn = bn if bn is not None else BNStatistics(teacher, recipe.first_bn_multiplier)
    total = sum(len(b) for b in batches)
    steps = recipe.iterations
    trace = torch.zeros(3, steps, device=ctx.device)  # objective, CE, BN sum per step, averaged over images
    images = []
    with (
        bn,
        ctx.progress(len(batches) * steps, f"{method}: recovering {total} images") as task,
    ):
        for batch in batches:
            y = batch.to(ctx.device)
            bn.select(y)
            x, part = _recover_batch(ctx, teacher, bn, y, recipe, min_scale, task)
            images.append(x)
            trace += part * (len(y) / total)
    labels = torch.cat(batches).to(ctx.device)
    order = torch.argsort(labels, stable=True)
    at = sorted({round(i) for i in torch.linspace(0, steps - 1, min(steps, TRACE_POINTS)).tolist()})
    trace = trace[:, at].cpu()
    meta = {
        "objective": trace[0].tolist(),
        "objective_ce": trace[1].tolist(),
        "objective_bn": trace[2].tolist(),
        "objective_steps": at,
        "recipe": dataclasses.asdict(recipe),
        "batches": len(batches),
    }
    return SyntheticSet(images=torch.cat(images)[order], labels=labels[order], meta=meta)


def _recover_batch(
    ctx: SynthesisContext,
    teacher: nn.Module,
    bn: BNStatistics,
    labels: torch.Tensor,
    recipe: Recipe,
    min_scale: Callable[[int], float],
    task,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimize one batch from N(0, 1) noise; returns its last iterate and its per-step losses."""
    gen = ctx.generator
    x = torch.randn(len(labels), *ctx.image_shape, generator=gen).to(ctx.device).requires_grad_()
    optimizer = torch.optim.Adam([x], lr=recipe.lr, betas=(0.5, 0.9), eps=1e-8)
    trace = torch.zeros(3, recipe.iterations, device=ctx.device)
    for t in range(recipe.iterations):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(recipe.lr, t, recipe.iterations)
        view = random_resized_crop_flip(x, (min_scale(t), 1.0), gen) if recipe.crop else x
        view = random_roll(view, recipe.jitter, recipe.symmetric_roll, gen)
        ce = F.cross_entropy(teacher(view), labels)
        bn_sum = bn.loss()
        loss = ce + recipe.r_bn * bn_sum
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=[x])  # gradients for the pixels only; the teacher is left untouched
        optimizer.step()
        with torch.no_grad():
            x.copy_(ctx.clamp(x))
            trace[:, t] = torch.stack([loss, ce, bn_sum])
        if t % 50 == 0 or t == recipe.iterations - 1:
            task.advance(1, loss=loss.item())
        else:
            task.advance(1)
    return x.detach(), trace
