"""Keeps the contract: class-coloured images plus noise drawn from ctx.generator, on ctx.device."""

import torch
from rd3_kit_fakes import info, labels

from rd3_harness import SyntheticSet, hookimpl


@hookimpl
def method_info():
    return info("kit-good", needs_real_data=False)


@hookimpl
def synthesize(ctx):
    y = labels(ctx)
    noise = torch.randn(len(y), *ctx.image_shape, generator=ctx.generator).to(ctx.device)
    pixels = (y.float().view(-1, 1, 1, 1) + 1) / (ctx.num_classes + 1) + ctx.config.scale * noise
    return SyntheticSet(images=ctx.normalize(pixels), labels=y)
