"""RDED (Sun et al., CVPR 2024): optimization-free dataset distillation.

Per class: draw real images, cut random-resized square crops, score each crop by the observer's
(the protocol teacher's) cross-entropy, keep the best crop per image and the `ipc * factor**2`
best overall, and stitch `factor x factor` of them into each output image.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_harness.errors import UsageError
from rd3_plugin_rded.crops import Crops, best_crops, stitch

__all__ = ["SMOKE_CONFIG", "Config", "distill", "factor_for"]

SMOKE_CONFIG = {"candidates": 20}
"""Config overrides that make a synthesis on the smoke protocol fast (read by `check_plugin`)."""

CITATION = (
    "Sun, Shi, Yu, Lin. On the Diversity and Realism of Distilled Dataset: "
    "An Efficient Dataset Distillation Paradigm. CVPR 2024. arXiv:2312.03526"
)


class Config(BaseModel, frozen=True, extra="forbid"):
    """RDED settings (defaults: the paper's scripts at every scale)."""

    candidates: int = Field(300, ge=1, description="real images drawn per class (RDED's mipc)")
    crops: int = Field(5, ge=1, description="random square crops per real image (num_crop)")
    factor: int | None = Field(
        None, ge=1, description="crops per side of an output image; None: 1 up to 64 px, 2 above (RDED's scripts)"
    )
    scale: tuple[float, float] = Field((0.08, 1.0), description="area range of the random-resized crops")


def factor_for(resolution: int) -> int:
    """RDED's factor: 1 for CIFAR/Tiny-ImageNet sizes (<= 64 px), 2 for 128/224 px."""
    return 1 if resolution <= 64 else 2


def distill(ctx, config: Config) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """RDED images, labels and a record of the kept crops (also EDC's initialization)."""
    real, observer = ctx.real_data, ctx.teacher
    factor = config.factor or factor_for(real.resolution)
    n = ctx.ipc * factor**2
    if config.candidates < n:
        raise UsageError(f"rded: candidates={config.candidates} is below ipc * factor^2 = {n}; raise candidates")
    images, kept_log, rejected_min = [], [], []
    with ctx.progress(ctx.num_classes, "rded: select and stitch crops") as bar:
        for c in range(ctx.num_classes):
            index = real.sample_indices(c, min(config.candidates, len(real.class_indices(c))), ctx.generator)
            if len(index) < n:
                raise UsageError(f"rded: class {c} has {len(index)} images, fewer than ipc * factor^2 = {n}")
            cand = best_crops(
                observer, real, index, c, crops=config.crops, factor=factor, scale=config.scale, generator=ctx.generator
            )
            kept, rejected = cand.lowest(n)
            images.append(stitch(real, kept, ctx.ipc, factor))
            kept_log += _cells(kept, ctx.ipc, factor)
            rejected_min.append(float(rejected.ce.min()) if len(rejected.ce) else None)
            bar.advance(ce=float(kept.ce.mean()))
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    meta = {"factor": factor, "crops": kept_log, "rejected_ce_min": rejected_min}
    return torch.cat(images), labels, meta


def _cells(kept: Crops, ipc: int, factor: int) -> list[list[list[float]]]:
    """Per output image, its cells in grid order: [source index, top, left, side, cross-entropy]."""
    rows = []
    for j in range(ipc):
        cells = []
        for k in range(factor**2):
            i = k * ipc + j
            top, left, side, _ = kept.boxes[i].tolist()
            cells.append([int(kept.index[i]), int(top), int(left), int(side), float(kept.ce[i])])
        rows.append(cells)
    return rows


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="rded",
        summary="RDED: teacher-scored real crops stitched into factor x factor grids (no optimization)",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=True,
        paper="https://arxiv.org/abs/2312.03526",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    images, labels, meta = distill(ctx, ctx.config)
    return SyntheticSet(images=images, labels=labels, meta=meta)
