"""DWA's synthesis: per IPC index, one batch of real images (one per class) recovered against a
teacher whose weights were adjusted on that batch; the weights are restored after each IPC index."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from rd3_harness import Augmentation, Augmenter, RandomResizedCrop, SyntheticSet, UsageError
from rd3_plugin_dwa.adjust import directed_adjustment
from rd3_plugin_dwa.recover import optimize


def synthesize(ctx) -> SyntheticSet:
    """The body of the plugin's `synthesize` hook (the entry-point module imports this lazily).

    As the reference's `main_syn` reloads the teacher for every IPC index, each IPC index starts
    from the original weights; its classes are optimized in chunks of `batch_size`, each chunk
    adjusting the (already adjusted) teacher once more, as the reference's loop over chunks does."""
    teacher = ctx.teacher
    if not any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules()):
        raise UsageError(
            "dwa matches BatchNorm statistics: the protocol's teacher has no BatchNorm2d layer; use a BN teacher"
        )
    s = ctx.config.values(ctx.image_shape[-1])
    real = ctx.real_data
    by_class = torch.stack([real.sample_indices(c, ctx.ipc, ctx.generator) for c in range(ctx.num_classes)])
    chunks = torch.arange(ctx.num_classes).split(s["batch_size"])
    augment = Augmenter(
        Augmentation(
            random_resized_crop=RandomResizedCrop(scale=s["scale"]) if s["crop"] == "resized" else None,
            horizontal_flip=s["flip"],
        ),
        ctx.image_shape[-1],
    )
    images, traces, norms = [], [], []
    with ctx.progress(ctx.ipc * len(chunks) * s["iterations"], "dwa: optimize images") as bar:
        for i in range(ctx.ipc):
            with contextlib.ExitStack() as adjusted:  # the original weights come back after each IPC index
                for classes in chunks:
                    y = classes.to(ctx.device)

                    def adjust(view: torch.Tensor, y: torch.Tensor = y) -> None:
                        norms.append(
                            adjusted.enter_context(directed_adjustment(teacher, view, y, s["rho"], s["steps"]))
                        )

                    x, trace = optimize(ctx, teacher, real.get(by_class[classes, i]), y, s, augment, bar, adjust)
                    images.append(x)
                    traces.append(trace)
    index = by_class.t().reshape(-1)  # IPC index-major, like the images
    labels = torch.arange(ctx.num_classes).repeat(ctx.ipc).to(ctx.device)
    width = math.ceil(s["iterations"] / 100)
    objective = [float(w.mean()) for w in torch.stack(traces).mean(0).split(width)]
    meta = {"objective": objective, "adjustment_norm": norms, "init_indices": index.tolist()}
    return SyntheticSet(images=torch.cat(images), labels=labels, meta=meta)
