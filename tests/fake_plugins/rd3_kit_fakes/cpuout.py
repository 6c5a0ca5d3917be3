"""Breaks the contract on a GPU: returns images made on the default device, whatever ctx.device is."""

import torch
from rd3_kit_fakes import info, labels

from rd3_harness import SyntheticSet, hookimpl


@hookimpl
def method_info():
    return info("kit-cpuout", needs_real_data=False)


@hookimpl
def synthesize(ctx):
    y = labels(ctx)
    return SyntheticSet(images=torch.zeros(len(y), *ctx.image_shape), labels=y)
