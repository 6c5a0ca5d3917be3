"""rd3-harness plugin `kcenter`: per class, k-center greedy in the teacher's embedding space
(Sener and Savarese, ICLR 2018; the coreset baseline of DeepCore): the real images that cover the
class, each new one the farthest from those already chosen.

Importing this module imports no torch: the selection (`rd3_plugin_kcenter.synthesis`) is loaded
by the first synthesis."""

from __future__ import annotations

from pydantic import BaseModel, Field, PositiveInt

from rd3_harness import MethodInfo, SyntheticSet, hookimpl

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
    from rd3_plugin_kcenter.synthesis import select  # torch: loaded on the first synthesis only

    return select(ctx)
