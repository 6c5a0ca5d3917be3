"""EDC's starting images: random real images of each class, or RDED's output (rd3-plugin-rded)."""

from __future__ import annotations

from typing import Any

import rd3_plugin_rded
import torch

from rd3_harness import Augmentation, Augmenter, ShufflePatches


def initial_images(ctx, init: str, rded: rd3_plugin_rded.Config) -> tuple[torch.Tensor, dict[str, Any]]:
    """Starting images in class order and a record of them: `ipc` random real images per class,
    randomly mirrored; or RDED's images, mirrored and patch-shuffled (EDC's ImageNet init)."""
    if init == "rded":
        images, _, rded_meta = rd3_plugin_rded.distill(ctx, rded)
        factor = rded_meta["factor"]
        spec = Augmentation(shuffle_patches=ShufflePatches(factor=factor) if factor > 1 else None, horizontal_flip=True)
        meta: dict[str, Any] = {"init": "rded", "rded": rded_meta}
    else:
        index = torch.cat([ctx.real_data.sample_indices(c, ctx.ipc, ctx.generator) for c in range(ctx.num_classes)])
        images, spec = ctx.real_data.get(index), Augmentation(horizontal_flip=True)
        meta = {"init": "real", "init_indices": index.tolist()}
    augment = Augmenter(spec, ctx.image_shape[-1])
    params = augment.draw(len(images), ctx.generator)
    meta["init_mirrored"] = params.flips.tolist()
    return augment.apply(images, params), meta
