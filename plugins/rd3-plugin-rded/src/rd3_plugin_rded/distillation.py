"""RDED per class: draw real images, keep the observer's best crops, stitch them into images."""

from __future__ import annotations

import torch

from rd3_harness import UsageError
from rd3_plugin_rded.config import Config, factor_for
from rd3_plugin_rded.crops import Crops, best_crops, stitch


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
                raise UsageError(
                    f"rded: class {c} has {len(index)} images, fewer than ipc * factor^2 = {n}; "
                    "lower factor (or use a protocol with a smaller ipc)"
                )
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
