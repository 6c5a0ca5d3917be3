"""Fake method plugins, each keeping or breaking one rule of the plugin contract."""

from __future__ import annotations

from pydantic import BaseModel

from rd3_harness import MethodInfo


class Config(BaseModel, frozen=True, extra="forbid"):
    scale: float = 0.1


def info(name: str, config: type[BaseModel] = Config, **needs: bool) -> MethodInfo:
    return MethodInfo(name=name, summary=f"{name}: a fake for the kit's tests", config_model=config, **needs)


def labels(ctx):
    import torch

    return torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
