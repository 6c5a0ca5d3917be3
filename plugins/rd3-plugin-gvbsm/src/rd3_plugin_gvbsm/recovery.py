"""The multi-teacher recovery loop of G-VBSM (and EDC): batched pixel optimization against
cross-entropy, statistics matching and data densification, one teacher per step, round-robin."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rd3_harness import Augmenter, UsageError
from rd3_plugin_gvbsm.config import Recipe
from rd3_plugin_gvbsm.matching import Matcher, densification_loss
from rd3_plugin_gvbsm.statistics import capture, real_stats

TRACE_POINTS = 100


def synthesis_teachers(ctx, method: str) -> tuple:
    """The protocol's synthesis teachers, or a UsageError saying how to list them."""
    teachers = ctx.teachers
    if not teachers:
        raise UsageError(
            f"{method} synthesizes with several teachers, and this protocol lists none: add a "
            "`synthesis_teachers:` list (teacher specs, like `teacher:`) to the protocol"
        )
    return teachers


def recover(
    ctx, recipe: Recipe, teachers, *, method: str, init: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Optimize `ipc` images per class, labels in class order, in batches of consecutive images
    (G-VBSM's layout: a batch holds whole classes, so the densification term sees several images
    per class). `init`: starting images in that order (model-input space); default Gaussian noise."""
    matchers = []
    with ctx.progress(len(teachers), f"{method}: real statistics of the teachers") as bar:
        for t in teachers:
            stats = real_stats(
                t,
                ctx.real_data,
                num_classes=ctx.num_classes,
                patch=recipe.patch,
                images_per_class=recipe.stats_images,
                cache_dir=ctx.cache_dir,
                dataset=ctx.dataset,
            )
            matchers.append(
                Matcher(stats, momentum=recipe.momentum, patch=recipe.patch, category_weight=recipe.category_weight)
            )
            bar.advance()
    labels = torch.arange(ctx.num_classes).repeat_interleave(ctx.ipc)
    if init is None:
        init = torch.randn(len(labels), *ctx.image_shape, generator=ctx.generator).to(ctx.device)
    batches = list(zip(labels.split(recipe.batch_size), init.split(recipe.batch_size)))
    # pad with black pixels, as the core pads when it trains the teachers (0 in model space is grey)
    black = ctx.normalize(torch.zeros(1, ctx.image_shape[0], 1, 1, device=ctx.device)).flatten()
    augment = Augmenter(recipe.augmentation, ctx.image_shape[-1], fill=black)
    images, traces, ces = [], [], []
    step = 0
    with ctx.progress(len(batches) * recipe.iterations, f"{method}: optimize images") as bar:
        for y, x0 in batches:
            x, trace, ce = _optimize(ctx, recipe, teachers, matchers, augment, x0, y, step, bar)
            step += recipe.iterations
            images.append(x)
            traces.append(trace)
            ces.append(ce)
    meta = {
        "objective": _windows(torch.stack(traces).mean(0)),
        "ce": _windows(torch.stack(ces).mean(0)),
        "teachers": len(teachers),
        "iterations": recipe.iterations,
    }
    return torch.cat(images), labels.to(ctx.device), meta


class _View:
    """One step's random augmentation: the recipe's crop and flip per image, then one cyclic
    shift of the whole batch by up to `jitter` pixels; applied alike to any batch."""

    def __init__(self, augment: Augmenter, jitter: int, n: int, generator: torch.Generator):
        self.augment, self.params = augment, augment.draw(n, generator)
        self.shift = tuple(torch.randint(0, jitter + 1, (2,), generator=generator).tolist()) if jitter else (0, 0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self.augment.apply(x, self.params)
        return torch.roll(x, self.shift, dims=(2, 3)) if any(self.shift) else x


def _optimize(ctx, recipe: Recipe, teachers, matchers, augment: Augmenter, x0, labels, step: int, bar):
    """Adam (betas 0.5, 0.9) on the pixels with a cosine learning rate to 0, clamped to valid
    pixels after each step; returns the last iterate and the per-step objective and CE."""
    runs = torch.unique_consecutive(labels, return_counts=True)[1].tolist()
    y = labels.to(ctx.device)
    x = x0.detach().clone().requires_grad_(True)
    x_ema = x0.detach().clone()
    opt = torch.optim.Adam([x], lr=recipe.lr, betas=(0.5, 0.9), eps=1e-8)
    for m in matchers:
        m.reset()
    trace = torch.zeros(recipe.iterations, device=ctx.device)
    ces = torch.zeros(recipe.iterations, device=ctx.device)
    for it in range(recipe.iterations):
        for group in opt.param_groups:
            group["lr"] = 0.5 * (1 + math.cos(math.pi * it / recipe.iterations)) * recipe.lr
        t = (step + it) % len(teachers)
        teacher, matcher = teachers[t], matchers[t]
        view = _View(augment, recipe.jitter, len(y), ctx.generator)
        xv = view(x)
        with capture(matcher.real.layers) as seen:
            out = teacher(xv)
        ce = F.cross_entropy(out, y)
        keep = torch.rand(len(seen), generator=ctx.generator) >= recipe.drop_rate
        layer = matcher.losses(seen, y, keep)
        loss = ce + recipe.r_loss * (layer.sum() + (recipe.first_multiplier - 1) * layer[0])
        if recipe.dd_weight:
            loss = loss + recipe.dd_weight * densification_loss(xv, runs, recipe.tau)
        if recipe.flatness_weight:
            with torch.no_grad():
                target = teacher(view(x_ema))
                x_ema.mul_(recipe.flatness_momentum).add_(x.detach(), alpha=1 - recipe.flatness_momentum)
            flat = F.kl_div(F.log_softmax(out / 4, 1), F.softmax(target / 4, 1), reduction="batchmean")
            loss = loss + recipe.flatness_weight * flat
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=[x])
        opt.step()
        with torch.no_grad():
            x.copy_(ctx.clamp(x))
        trace[it], ces[it] = loss.detach(), ce.detach()
        bar.advance(**({"loss": loss.item()} if it % 50 == 0 else {}))
    return x.detach(), trace.cpu(), ces.cpu()


def _windows(trace: torch.Tensor) -> list[float]:
    """A per-step trace as at most TRACE_POINTS means of consecutive windows."""
    width = math.ceil(len(trace) / TRACE_POINTS)
    return [float(w.mean()) for w in trace.split(width)]
