"""DWA's synthesis: per batch of random real images, adjust the teacher's weights, recover the
images against the adjusted teacher, and restore the weights."""

from __future__ import annotations

import math

import torch
from torch import nn

from rd3_harness import Augmentation, Augmenter, RandomResizedCrop, SyntheticSet, UsageError
from rd3_plugin_dwa.adjust import directed_adjustment
from rd3_plugin_dwa.recover import optimize


def synthesize(ctx) -> SyntheticSet:
    """The body of the plugin's `synthesize` hook (the entry-point module imports this lazily)."""
    teacher = ctx.teacher
    if not any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules()):
        raise UsageError(
            "dwa matches BatchNorm statistics: the protocol's teacher has no BatchNorm2d layer; use a BN teacher"
        )
    s = ctx.config.values(ctx.image_shape[-1])
    real = ctx.real_data
    # SRe2L's layout: IPC index-major, so a batch holds one image of every class per IPC index
    by_class = torch.stack([real.sample_indices(c, ctx.ipc, ctx.generator) for c in range(ctx.num_classes)])
    index = by_class.t().reshape(-1)
    labels = torch.arange(ctx.num_classes).repeat(ctx.ipc).to(ctx.device)
    augment = Augmenter(
        Augmentation(
            random_resized_crop=RandomResizedCrop(scale=s["scale"]) if s["crop"] == "resized" else None,
            horizontal_flip=s["flip"],
        ),
        ctx.image_shape[-1],
    )
    images, traces, norms = [], [], []
    batches = list(zip(index.split(s["batch_size"]), labels.split(s["batch_size"])))
    with ctx.progress(len(batches) * s["iterations"], "dwa: optimize images") as bar:
        for idx, y in batches:
            x_real = real.get(idx)
            with directed_adjustment(teacher, x_real, y, s["rho"], s["steps"]) as norm:
                x, trace = optimize(ctx, teacher, x_real, y, s, augment, bar)
            images.append(x)
            traces.append(trace)
            norms.append(norm)
    width = math.ceil(s["iterations"] / 100)
    objective = [float(w.mean()) for w in torch.stack(traces).mean(0).split(width)]
    meta = {"objective": objective, "adjustment_norm": norms, "init_indices": index.tolist()}
    return SyntheticSet(images=torch.cat(images), labels=labels, meta=meta)
