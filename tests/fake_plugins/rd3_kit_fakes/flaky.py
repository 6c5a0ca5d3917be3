"""Breaks the contract: draws from Python's global `random`, not ctx.generator."""

import random

import torch
from rd3_kit_fakes import info, labels

from rd3_harness import SyntheticSet, hookimpl


@hookimpl
def method_info():
    return info("kit-flaky", needs_real_data=False)


@hookimpl
def synthesize(ctx):
    y = labels(ctx)
    return SyntheticSet(images=torch.full((len(y), *ctx.image_shape), random.random(), device=ctx.device), labels=y)
