"""rd3-harness plugin `herding`: per class, the real images whose running mean in the teacher's
embedding space best tracks the class mean (Welling, ICML 2009; the coreset baseline of DeepCore).

Canonical herding takes the argmin of ||(k+1) mu - sum_selected - x||; DeepCore's code takes the
argmax, which this plugin does not reproduce.

Importing this module imports no torch: the selection (`rd3_plugin_herding.synthesis`) is loaded
by the first synthesis."""

from __future__ import annotations

from pydantic import BaseModel, Field, PositiveInt

from rd3_harness import MethodInfo, SyntheticSet, hookimpl

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
    from rd3_plugin_herding.synthesis import select  # torch: loaded on the first synthesis only

    return select(ctx)
