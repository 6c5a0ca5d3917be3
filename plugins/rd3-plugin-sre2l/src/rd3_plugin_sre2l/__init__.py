"""rd3-harness plugin `sre2l`: SRe2L's recovery of images from a BatchNorm teacher (Yin, Xing and
Shen, NeurIPS 2023). Its pieces (`Config`, `resolve`, `recover`) are reused by `rd3-plugin-cda`."""

from __future__ import annotations

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_plugin_sre2l.config import PRESETS, Config, Preset, Recipe, preset_for, resolve
from rd3_plugin_sre2l.recovery import MIN_SCALE, recover

SMOKE_CONFIG = {"iterations": 20}
"""Config overrides that make a smoke synthesis take seconds (used by the conformance check)."""

CITATION = (
    "Zeyuan Yin, Eric Xing, Zhiqiang Shen. Squeeze, Recover and Relabel: Dataset Condensation at "
    "ImageNet Scale From A New Perspective. NeurIPS 2023."
)


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="sre2l",
        summary="SRe2L: recover images from noise by CE + BatchNorm-statistics matching on the teacher",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=False,
        paper="https://arxiv.org/abs/2306.13092",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    return recover(ctx, resolve(ctx.config, ctx.image_shape), method="sre2l")


__all__ = ["SMOKE_CONFIG", "MIN_SCALE", "PRESETS", "Config", "Preset", "Recipe", "preset_for", "recover", "resolve"]
