"""Herding per class in the teacher's embedding space: the body of the plugin's `synthesize`."""

from __future__ import annotations

import torch

from rd3_harness import SyntheticSet, UsageError, embed_real
from rd3_plugin_herding.selection import herding


def select(ctx) -> SyntheticSet:
    """`ipc` real images per class, herded in the teacher's penultimate-layer space."""
    config = ctx.config
    if config.pool is not None and config.pool < ctx.ipc:
        raise UsageError(
            f"herding: pool={config.pool} is below the protocol's ipc={ctx.ipc}: raise pool to at least "
            f"{ctx.ipc} (or leave it unset to herd over every image of the class)"
        )
    selected = []
    with ctx.progress(ctx.num_classes, "herding: embedding and selecting per class") as task:
        for c in range(ctx.num_classes):
            pool = ctx.real_data.class_indices(c)
            if config.pool is not None and config.pool < len(pool):
                pool = ctx.real_data.sample_indices(c, config.pool, ctx.generator)
            if len(pool) < ctx.ipc:
                raise UsageError(
                    f"herding: class {c} has {len(pool)} images, fewer than the protocol's ipc={ctx.ipc}: "
                    f"use a protocol with ipc <= {len(pool)}"
                )
            features = embed_real(ctx.teacher, ctx.real_data, pool, config.batch_size)
            selected.append(pool[herding(features, ctx.ipc)])
            task.advance(1)
    indices = torch.cat(selected)
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    return SyntheticSet(
        images=ctx.real_data.get(indices).to(ctx.device), labels=labels, meta={"indices": indices.tolist()}
    )
