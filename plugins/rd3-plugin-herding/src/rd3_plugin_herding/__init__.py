"""rd3-harness plugin `herding`: per class, the real images whose running mean in the teacher's
embedding space best tracks the class mean (Welling, ICML 2009; the coreset baseline of DeepCore).

Canonical herding takes the argmin of ||(k+1) mu - sum_selected - x||; DeepCore's code takes the
argmax, which this plugin does not reproduce."""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field, PositiveInt

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_harness.models import embed_real
from rd3_plugin_herding.selection import herding

CITATION = (
    "Max Welling. Herding Dynamical Weights to Learn. ICML 2009. Baseline as in Chengcheng Guo, Bo Zhao, "
    "Yanbing Bai. DeepCore: A Comprehensive Library for Coreset Selection in Deep Learning. DEXA 2022."
)


class Config(BaseModel, frozen=True, extra="forbid"):
    """Herding in the teacher's penultimate-layer space, run per class."""

    pool: PositiveInt | None = Field(
        default=None, description="herd over this many random images per class (None: every image of the class)"
    )
    batch_size: PositiveInt = Field(default=500, description="images per teacher forward pass when embedding")


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="herding",
        summary="Herding: real images whose running embedding mean tracks the class mean (argmin rule)",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=True,
        paper="https://dl.acm.org/doi/10.1145/1553374.1553517",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    config: Config = ctx.config
    selected = []
    with ctx.progress(ctx.num_classes, "herding: embedding and selecting per class") as task:
        for c in range(ctx.num_classes):
            pool = ctx.real_data.class_indices(c)
            if config.pool is not None and config.pool < len(pool):
                pool = ctx.real_data.sample_indices(c, config.pool, ctx.generator)
            features = embed_real(ctx.teacher, ctx.real_data, pool, config.batch_size)
            selected.append(pool[herding(features, ctx.ipc)])
            task.advance(1)
    indices = torch.cat(selected)
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    return SyntheticSet(
        images=ctx.real_data.get(indices).to(ctx.device), labels=labels, meta={"indices": indices.tolist()}
    )
