"""`random`: the baseline every method is measured against: IPC real training images per class,
drawn uniformly without replacement with the run's generator."""

from __future__ import annotations

from pydantic import BaseModel

from rd3_harness.contract import MethodInfo, SyntheticSet
from rd3_harness.hookspecs import hookimpl


class Config(BaseModel, frozen=True, extra="forbid"):
    """The random baseline has no settings."""


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="random",
        summary="Random real images: IPC training images per class (the baseline)",
        config_model=Config,
        needs_teacher=False,
        needs_real_data=True,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    import torch

    indices = torch.cat([ctx.real_data.sample_indices(c, ctx.ipc, ctx.generator) for c in range(ctx.num_classes)])
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    return SyntheticSet(images=ctx.real_data.get(indices), labels=labels, meta={"indices": indices.tolist()})
