"""Breaks the contract on a GPU: adds noise made on the default device to images on ctx.device."""

import torch
from rd3_kit_fakes import info, labels

from rd3_harness import SyntheticSet, hookimpl


@hookimpl
def method_info():
    return info("kit-mixes")


@hookimpl
def synthesize(ctx):
    real = torch.cat([ctx.real_data.sample(c, ctx.ipc, generator=ctx.generator) for c in range(ctx.num_classes)])
    noise = torch.randn(real.shape, generator=ctx.generator)
    return SyntheticSet(images=real + ctx.config.scale * noise, labels=labels(ctx))
