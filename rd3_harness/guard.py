"""The core's wrapper around every `synthesize` call: seeds, times, measures and validates."""

from __future__ import annotations

import torch

from rd3_harness.cost import measure
from rd3_harness.hookspecs import hookimpl
from rd3_harness.synthesis import SynthesisContext, validate_synthetic_set


@hookimpl(wrapper=True)
def synthesize(ctx: SynthesisContext):
    torch.manual_seed(ctx.seed)  # for code that ignores ctx.generator (model init, dropout)
    with measure(ctx.device) as cost:
        result = yield
    ctx.cost.update(cost)
    return validate_synthetic_set(result, ctx.method, ctx.ipc, ctx.num_classes, ctx.image_shape)
