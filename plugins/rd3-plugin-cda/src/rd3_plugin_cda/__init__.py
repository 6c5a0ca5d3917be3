"""rd3-harness plugin `cda`: SRe2L recovery with a curriculum on the random-resized crop (Yin and
Shen, TMLR 2024): the crop's lower scale bound falls from 1 (whole image, easy) to 0.08 (hard).

Importing this module imports no torch: SRe2L's recovery is loaded by the first synthesis."""

from __future__ import annotations

import functools
import math
from typing import Literal

from pydantic import Field, model_validator
from rd3_plugin_sre2l import MIN_SCALE, Preset, resolve
from rd3_plugin_sre2l import Config as SRe2LConfig

from rd3_harness import MethodInfo, SyntheticSet, hookimpl

Schedule = Literal["cosine", "step", "linear"]

PRESETS: dict[str, Preset] = {
    # no CDA script at 32 px: SRe2L's CIFAR settings, with the crop the curriculum needs [inferred]
    "cifar": Preset(iterations=1000, lr=0.25, r_bn=0.01, jitter=4, symmetric_roll=False, crop=True),
    # CDA/README, recover_cda_tiny.py: roll by 0..4 px
    "tiny": Preset(iterations=4000, lr=0.4, r_bn=0.05, jitter=4, symmetric_roll=False, crop=True),
    # CDA/README, recover_cda_in1k.py
    "imagenet": Preset(iterations=4000, lr=0.25, r_bn=0.01, jitter=32, symmetric_roll=False, crop=True),
}

FINAL_SCALE = {"cifar": 0.86, "tiny": MIN_SCALE, "imagenet": MIN_SCALE}
"""The lower crop-scale bound the curriculum ends at, per preset. CDA's scripts (64 and 224 px)
end at torchvision's 0.08, the range their teachers were trained with. No CDA script exists at
<= 32 px, and the small-scale teachers (the CPU protocols': pad-2 random crops and flips at 28 px)
never saw a zoomed crop: there it ends at 0.86, about the least share of the image a pad-2 crop
of a 28 px image keeps ((26/28)^2), so the recovery's views stay in the teacher's range."""

SMOKE_CONFIG = {"iterations": 20}
"""Config overrides that make a smoke synthesis take seconds (used by the conformance check)."""

CITATION = "Zeyuan Yin, Zhiqiang Shen. Dataset Distillation via Curriculum Data Synthesis in Large Data Era. TMLR 2024."


class Config(SRe2LConfig):
    """SRe2L's settings (with CDA's presets: <= 32 px lr 0.25, r_bn 0.01, 1K iterations; <= 64 px
    lr 0.4, r_bn 0.05, 4K; larger lr 0.25, r_bn 0.01, 4K, roll 0..32) plus the crop curriculum."""

    schedule: Schedule = Field(default="cosine", description="how the lower crop-scale bound falls from 1 to 0.08")
    milestone: float = Field(default=1.0, ge=0, le=1, description="fraction of the iterations the curriculum spans")
    final_scale: float | None = Field(
        default=None, gt=0, le=1, description="lower crop-scale bound the curriculum ends at (None: the preset's)"
    )

    @model_validator(mode="after")
    def _needs_crop(self) -> Config:
        if self.crop is False:
            raise ValueError("CDA's curriculum acts on the random-resized crop: leave crop on (or use sre2l)")
        return self


def min_crop_scale(
    t: int, iterations: int, schedule: Schedule = "cosine", milestone: float = 1.0, final: float = MIN_SCALE
) -> float:
    """The lower bound of the crop scale at step t of T, falling from 1 to `final`: for t < m T,
    cosine final + (1 - final) 1/2 (1 + cos(pi t / (m T))), linear final + (1 - final)(1 - t / (m T)),
    step 1.0; then `final`."""
    span = milestone * iterations
    if t >= span:
        return final
    if schedule == "step":
        return 1.0
    progress = t / span
    fall = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return final + (1 - final) * fall


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="cda",
        summary="CDA: SRe2L recovery with an easy-to-hard curriculum on the random-resized-crop scale",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=False,
        paper="https://arxiv.org/abs/2311.18838",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    from rd3_plugin_sre2l.recovery import recover  # torch: loaded on the first synthesis only

    config = ctx.config
    recipe = resolve(config, ctx.image_shape, PRESETS)
    final = config.final_scale if config.final_scale is not None else FINAL_SCALE[recipe.preset]
    schedule = functools.partial(
        min_crop_scale, iterations=recipe.iterations, schedule=config.schedule, milestone=config.milestone, final=final
    )
    synset = recover(ctx, recipe, method="cda", min_scale=schedule)
    synset.meta["curriculum"] = {"schedule": config.schedule, "milestone": config.milestone, "final_scale": final}
    return synset


__all__ = ["SMOKE_CONFIG", "FINAL_SCALE", "PRESETS", "Config", "min_crop_scale"]
