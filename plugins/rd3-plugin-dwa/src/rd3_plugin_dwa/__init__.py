"""DWA (Du et al., NeurIPS 2024): diversity-driven synthesis through directed weight adjustment.

SRe2L-style recovery from real images, where before each batch the teacher's weights are moved
along the gradient of its loss on that batch's random real images (so each batch sees a slightly
different teacher: more diverse images), and restored after the batch.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_harness.augment import Augmentation, Augmenter, RandomResizedCrop
from rd3_harness.errors import UsageError
from rd3_plugin_dwa.adjust import directed_adjustment
from rd3_plugin_dwa.recover import optimize

__all__ = ["SMOKE_CONFIG", "PRESETS", "Config", "directed_adjustment"]

SMOKE_CONFIG = {"iterations": 20}
"""Config overrides that make a synthesis on the smoke protocol fast (read by `check_plugin`)."""

CITATION = (
    "Du, Zhang, Hu, Huang, Zhou. Diversity-Driven Synthesis: Enhancing Dataset Distillation through "
    "Directed Weight Adjustment. NeurIPS 2024. arXiv:2409.17612"
)

CIFAR = dict(
    iterations=1000,
    lr=0.25,
    batch_size=100,
    r_bn=0.01,
    first_bn_multiplier=10.0,
    r_var=11.0,
    jitter=4,
    crop="none",
    scale=(0.08, 1.0),
    flip=False,
    rho=0.015,
    steps=12,
)
PRESETS: dict[int, dict[str, Any]] = {
    # the CPU protocols (Fashion-MNIST, 28 px): CIFAR's recipe with 500 steps, so the default
    # protocol synthesizes in minutes on 2 cores
    28: CIFAR | dict(iterations=500),
    32: CIFAR,  # scripts/run_cifar.sh (AngusDujw/Diversity-Driven-Synthesis)
    64: CIFAR | dict(iterations=2000, lr=0.1, batch_size=200, crop="resized", flip=True),  # run_tiny.sh
    224: CIFAR | dict(iterations=2000, jitter=32, crop="resized", flip=True, r_var=2.0, steps=15),  # run_imgnet.sh
}


class Config(BaseModel, frozen=True, extra="forbid"):
    """DWA settings. Every value left unset (null) comes from the preset of the resolution: 28 px
    (the CPU protocols), 32 px (CIFAR), 64 px (Tiny-ImageNet), 224 px (ImageNet-1k); see `PRESETS`."""

    iterations: int | None = Field(None, ge=1, description="optimization steps per batch")
    lr: float | None = Field(None, gt=0, description="Adam learning rate on the pixels, cosine to 0")
    batch_size: int | None = Field(None, ge=1, description="images per batch (one per class for each IPC index)")
    r_bn: float | None = Field(None, ge=0, description="weight of the BatchNorm statistics loss")
    first_bn_multiplier: float | None = Field(None, ge=0, description="extra weight of the first BatchNorm layer")
    r_var: float | None = Field(None, ge=0, description="weight of the variance term inside the BatchNorm loss")
    jitter: int | None = Field(None, ge=0, description="largest cyclic shift of the batch per step, in pixels")
    crop: Literal["resized", "none"] | None = Field(None, description="per-step random-resized crop, or none")
    scale: tuple[float, float] | None = Field(None, description="area range of the random-resized crop")
    flip: bool | None = Field(None, description="random horizontal flip per step")
    rho: float | None = Field(None, ge=0, description="magnitude of the weight adjustment (|delta| <= rho)")
    steps: int | None = Field(None, ge=1, description="gradient steps of the adjustment, each of length rho / steps")

    def values(self, resolution: int) -> dict[str, Any]:
        """The preset of the smallest scale at or above `resolution` (ImageNet's beyond 64 px),
        overridden by the values set here."""
        scale = next((s for s in sorted(PRESETS) if resolution <= s), 224)
        return PRESETS[scale] | {k: v for k, v in self.model_dump().items() if v is not None}


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="dwa",
        summary="DWA: SRe2L recovery from real images with a directed adjustment of the teacher's weights per batch",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=True,
        paper="https://arxiv.org/abs/2409.17612",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    teacher = ctx.teacher
    if not any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules()):
        raise UsageError(
            "dwa matches BatchNorm statistics: the protocol's teacher has no BatchNorm2d layer; use a BN teacher"
        )
    s = ctx.config.values(ctx.image_shape[-1])
    real = ctx.real_data
    # SRe2L's layout: IPC index-major, so a batch holds one image of every class per IPC index
    by_class = torch.stack([real.sample_indices(c, ctx.ipc, ctx.generator) for c in range(ctx.num_classes)])
    index = by_class.t().reshape(-1)
    labels = torch.arange(ctx.num_classes).repeat(ctx.ipc).to(ctx.device)
    augment = Augmenter(
        Augmentation(
            random_resized_crop=RandomResizedCrop(scale=s["scale"]) if s["crop"] == "resized" else None,
            horizontal_flip=s["flip"],
        ),
        ctx.image_shape[-1],
    )
    images, traces, norms = [], [], []
    batches = list(zip(index.split(s["batch_size"]), labels.split(s["batch_size"])))
    with ctx.progress(len(batches) * s["iterations"], "dwa: optimize images") as bar:
        for idx, y in batches:
            x_real = real.get(idx)
            with directed_adjustment(teacher, x_real, y, s["rho"], s["steps"]) as norm:
                x, trace = optimize(ctx, teacher, x_real, y, s, augment, bar)
            images.append(x)
            traces.append(trace)
            norms.append(norm)
    width = math.ceil(s["iterations"] / 100)
    objective = [float(w.mean()) for w in torch.stack(traces).mean(0).split(width)]
    meta = {"objective": objective, "adjustment_norm": norms, "init_indices": index.tolist()}
    return SyntheticSet(images=torch.cat(images), labels=labels, meta=meta)
