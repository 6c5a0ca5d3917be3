"""The core's wrapper around every `synthesize` call: seeds, times, measures and validates."""

from __future__ import annotations

import torch

from rd3_harness.cost import measure
from rd3_harness.errors import PluginFailure
from rd3_harness.hookspecs import hookimpl
from rd3_harness.synthesis import SynthesisContext, validate_synthetic_set


@hookimpl(wrapper=True)
def synthesize(ctx: SynthesisContext):
    torch.manual_seed(ctx.seed)  # for code that ignores ctx.generator (model init, dropout)
    with measure(ctx.device) as cost:
        result = yield
    cost["wall_s"] -= ctx.cost.get("teacher_load_wall_s", 0.0)  # teachers are the protocol's cost
    cost["cpu_s"] -= ctx.cost.get("teacher_load_cpu_s", 0.0)
    ctx.cost.update(cost)
    changed = ctx.changed_teachers()
    if changed:
        raise PluginFailure(
            f"plugin {ctx.method!r} changed the weights of the teacher ({', '.join(changed)}) it was given; "
            "the core evaluates with the same teacher: restore it, or work on copy.deepcopy(ctx.teacher)"
        )
    return validate_synthetic_set(result, ctx.method, ctx.ipc, ctx.num_classes, ctx.image_shape)
