"""Synthesis contexts outside a run, for tests and for `check_plugin`: `make_context` builds one by
hand on a runner `Workspace`, `real_slice` narrows its real data, `synthesize_smoke` runs a plugin as
`rd3h run` does. The fixtures of `rd3_harness.testing` are built on these."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from rd3_harness.data.real import RealData
from rd3_harness.synthesis import SynthesisContext, model_maker

SMOKE_PROTOCOL = "cpu/smoke.v1"
SMOKE_IMAGES_PER_CLASS = 100
"""Size of the real-data slice of `smoke_real_data` and of `check_plugin` (per class)."""
SMOKE_CONFIG_ATTRIBUTE = "SMOKE_CONFIG"
"""A plugin module's dict of config overrides that make a smoke synthesis fast (used by `check_plugin`)."""


def synthesize_smoke(workspace, method: str, *, reuse: bool = False, **config):
    """Run `method` on the smoke workspace; returns the runner's `Synthesized` (set, manifest, folder)."""
    from rd3_harness.runner import synthesize

    return synthesize(workspace, method, config, reuse=reuse)


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
    """A `SynthesisContext` like the one `rd3h run` gives a plugin, on `workspace` (a runner `Workspace`).

    `real_data`: a `RealData` (e.g. a slice), True for the workspace's training set, False for None.
    `teacher`: whether `ctx.teacher`/`ctx.teachers` load the protocol's teachers (as `needs_teacher`).
    `device`: another device than the workspace's moves the real data and the teachers there (e.g. `meta`).
    """

    p = workspace.protocol
    target = torch.device(device) if device is not None else workspace.settings.torch_device
    generator = torch.Generator().manual_seed(p.synthesis_seed if seed is None else seed)
    shape = workspace.test.image_shape
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (p.dataset.normalization.mean, p.dataset.normalization.std))
    real = workspace.train if real_data is True else None if real_data is False else real_data

    def on_target(model: nn.Module) -> nn.Module:
        return model if _placed(next(model.parameters(), torch.empty(0)), target) else copy.deepcopy(model).to(target)

    workdir.mkdir(parents=True, exist_ok=True)
    return SynthesisContext(
        ipc=p.ipc,
        num_classes=workspace.info.num_classes,
        image_shape=shape,
        config=config,
        real_data=None if real is None else _real_on(real, target, p.dataset.normalization),
        generator=generator,
        seed=p.synthesis_seed if seed is None else seed,
        device=target,
        workdir=workdir,
        cache_dir=cache_dir,
        dataset=p.dataset.name,
        method=method,
        make_model=model_maker(generator, workspace.info.num_classes, shape, target),
        normalize=lambda x: (x - mean.to(x)) / std.to(x),
        denormalize=lambda x: x * std.to(x) + mean.to(x),
        load_teacher=(lambda: on_target(workspace.teacher(p.teacher).model)) if teacher else (lambda: None),
        load_teachers=(lambda: tuple(on_target(workspace.teacher(t).model) for t in p.synthesis_teachers))
        if teacher
        else tuple,
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
    )


def _placed(tensor: torch.Tensor, device: torch.device) -> bool:
    """Whether `tensor` lives on `device` (`cuda` without an index means the current CUDA device)."""
    if tensor.device.type != device.type:
        return False
    if device.type == "cuda" and device.index is None:
        return tensor.device.index == torch.cuda.current_device()
    return device.index is None or tensor.device.index == device.index


# ------------------------------------------------------------------ conformance
