"""Breaks the contract: one image too many per class."""

import torch
from rd3_kit_fakes import info

from rd3_harness import SyntheticSet, hookimpl


@hookimpl
def method_info():
    return info("kit-invalid", needs_real_data=False)


@hookimpl
def synthesize(ctx):
    y = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc + 1)
    return SyntheticSet(images=torch.zeros(len(y), *ctx.image_shape, device=ctx.device), labels=y)
