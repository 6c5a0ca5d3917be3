"""Breaks the contract on a GPU: draws on ctx.device with the CPU generator ctx.generator."""

import torch
from rd3_kit_fakes import info, labels

from rd3_harness import SyntheticSet, hookimpl


@hookimpl
def method_info():
    return info("kit-devgen", needs_real_data=False)


@hookimpl
def synthesize(ctx):
    y = labels(ctx)
    return SyntheticSet(
        images=torch.randn(len(y), *ctx.image_shape, generator=ctx.generator, device=ctx.device), labels=y
    )
