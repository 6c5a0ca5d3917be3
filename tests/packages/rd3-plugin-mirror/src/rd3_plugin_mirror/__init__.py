"""A third-party-style test plugin: IPC random real images per class, flipped left-right."""

import torch
from pydantic import BaseModel

from rd3_harness import MethodInfo, SyntheticSet, hookimpl


class Config(BaseModel, frozen=True, extra="forbid"):
    flip: bool = True


@hookimpl
def method_info():
    return MethodInfo(name="mirror", summary="Mirrored random real images (test plugin)", config_model=Config)


@hookimpl
def synthesize(ctx):
    images = torch.cat([ctx.real_data.sample(c, ctx.ipc, generator=ctx.generator) for c in range(ctx.num_classes)])
    if ctx.config.flip:
        images = images.flip(3)
    labels = torch.arange(ctx.num_classes).repeat_interleave(ctx.ipc)
    return SyntheticSet(images=images, labels=labels)
