"""Synthesis contexts outside a run, for tests and for `check_plugin`: `make_context` builds one by
hand on a `Workspace`, `real_slice` narrows its real data, `synthesize_smoke` runs a plugin as
`rd3h run` does. The fixtures of `rd3_harness.testing` are built on these."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from rd3_harness.contract import SynthesisContext
from rd3_harness.data.real import RealData

SMOKE_PROTOCOL = "cpu/smoke.v1"
SMOKE_IMAGES_PER_CLASS = 100
"""Size of the real-data slice of `smoke_real_data` and of `check_plugin` (per class)."""
SMOKE_CONFIG_ATTRIBUTE = "SMOKE_CONFIG"
"""A plugin module's dict of config overrides that make a smoke synthesis fast (used by `check_plugin`)."""


def synthesize_smoke(workspace, method: str, *, reuse: bool = False, plugins=None, **config):
    """Run `method` on the smoke workspace; returns the runner's `Synthesized` (set, manifest, folder)."""
    from rd3_harness.plugins import get_plugins
    from rd3_harness.runner import synthesize

    return synthesize(plugins or get_plugins(), workspace, method, config, reuse=reuse)


def real_slice(real: RealData, per_class: int) -> RealData:
    """The first `per_class` images of each class of `real` (same resolution, normalization, device)."""
    return real.subset(torch.cat([real.class_indices(c)[:per_class] for c in range(real.num_classes)]))


def make_context(
    workspace,
    config: BaseModel,
    *,
    workdir: Path,
    cache_dir: Path,
    method: str = "test",
    real_data: RealData | bool = True,
    teacher: bool = True,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> SynthesisContext:
    """A `SynthesisContext` like the one `rd3h run` gives a plugin, on `workspace` (a `Workspace`).

    `real_data`: a `RealData` (e.g. a slice), True for the workspace's training set, False for None.
    `teacher`: whether `ctx.teacher`/`ctx.teachers` load the protocol's teachers (as `needs_teacher`).
    `device`: another device than the workspace's moves the real data and the teachers there (e.g. `meta`).
    """

    target = torch.device(device) if device is not None else workspace.settings.torch_device
    real = workspace.train if real_data is True else None if real_data is False else real_data

    def on_target(model: nn.Module) -> nn.Module:
        return model if _placed(next(model.parameters(), torch.empty(0)), target) else copy.deepcopy(model).to(target)

    return workspace.context(
        method,
        config,
        workdir=workdir,
        cache_dir=cache_dir,
        real_data=None if real is None else _real_on(real, target, workspace.protocol.dataset.normalization),
        teacher=teacher,
        place=on_target,
        device=target,
        seed=seed,
    )


def _real_on(real: RealData, device: torch.device, normalization) -> RealData:
    if _placed(torch.empty(0, device=real.device), device):
        return real
    return RealData(
        real.split,
        num_classes=real.num_classes,
        resolution=real.resolution,
        mean=normalization.mean,
        std=normalization.std,
        device=device,
        test=real.test,
        workers=real.workers,
        cache=real.cache,
    )


def _placed(tensor: torch.Tensor, device: torch.device) -> bool:
    """Whether `tensor` lives on `device` (`cuda` without an index means the current CUDA device)."""
    if tensor.device.type != device.type:
        return False
    if device.type == "cuda" and device.index is None:
        return tensor.device.index == torch.cuda.current_device()
    return device.index is None or tensor.device.index == device.index
