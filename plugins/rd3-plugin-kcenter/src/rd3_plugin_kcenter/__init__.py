"""rd3-harness plugin `kcenter`: per class, k-center greedy in the teacher's embedding space
(Sener and Savarese, ICLR 2018; the coreset baseline of DeepCore): the real images that cover the
class, each new one the farthest from those already chosen."""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field, PositiveInt

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_harness.models import embed_real
from rd3_plugin_kcenter.selection import k_center_greedy

CITATION = (
    "Ozan Sener, Silvio Savarese. Active Learning for Convolutional Neural Networks: A Core-Set Approach. "
    "ICLR 2018. Baseline as in Chengcheng Guo, Bo Zhao, Yanbing Bai. DeepCore: A Comprehensive Library for "
    "Coreset Selection in Deep Learning. DEXA 2022."
)


class Config(BaseModel, frozen=True, extra="forbid"):
    """k-center greedy in the teacher's penultimate-layer space, run per class."""

    pool: PositiveInt | None = Field(
        default=None, description="select among this many random images per class (None: every image of the class)"
    )
    batch_size: PositiveInt = Field(default=500, description="images per teacher forward pass when embedding")


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="kcenter",
        summary="k-Center greedy: real images covering each class in the teacher's embedding space",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=True,
        paper="https://arxiv.org/abs/1708.00489",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    config: Config = ctx.config
    selected = []
    with ctx.progress(ctx.num_classes, "kcenter: embedding and selecting per class") as task:
        for c in range(ctx.num_classes):
            pool = ctx.real_data.class_indices(c)
            if config.pool is not None and config.pool < len(pool):
                pool = ctx.real_data.sample_indices(c, config.pool, ctx.generator)
            features = embed_real(ctx.teacher, ctx.real_data, pool, config.batch_size)
            selected.append(pool[k_center_greedy(features, ctx.ipc, ctx.generator)])
            task.advance(1)
    indices = torch.cat(selected)
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    images = ctx.real_data.get(indices).to(ctx.device)
    return SyntheticSet(images=images, labels=labels, meta={"indices": indices.tolist()})
