"""rd3-harness plugin `lpld`: the recovery of LPLD (Xiao and He, NeurIPS 2024): SRe2L with the
images of each class matched to class-conditional BatchNorm statistics of the teacher. LPLD's
label pruning acts on evaluation and belongs to the protocol, not to this plugin.

Importing this module imports no torch: the class statistics (`ClassBNStatistics`, `class_layout`,
`class_statistics`, from `rd3_plugin_lpld.statistics`) and SRe2L's recovery load on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pydantic import Field, PositiveInt
from rd3_plugin_sre2l import Config as SRe2LConfig
from rd3_plugin_sre2l import Preset, resolve

from rd3_harness import MethodInfo, SyntheticSet, hookimpl

if TYPE_CHECKING:
    from rd3_plugin_lpld.statistics import ClassBNStatistics, class_layout, class_statistics

PRESETS: dict[str, Preset] = {
    # no LPLD script at 32 px: SRe2L's CIFAR settings [inferred]
    "cifar": Preset(iterations=1000, lr=0.25, r_bn=0.01, jitter=4, symmetric_roll=False, crop=False),
    # recover/scripts/tiny_recover.sh, data_synthesis_tiny_class.py: roll by -4..4 px
    "tiny": Preset(iterations=4000, lr=0.1, r_bn=0.05, jitter=4, symmetric_roll=True, crop=True),
    # recover/scripts/imagenet1k_recover.sh, data_synthesis_class.py
    "imagenet": Preset(iterations=4000, lr=0.25, r_bn=0.01, jitter=32, symmetric_roll=False, crop=True),
}

SMOKE_CONFIG = {"iterations": 20}
"""Config overrides that make a smoke synthesis take seconds (used by the conformance check)."""

CITATION = (
    "Lingao Xiao, Yang He. Are Large-scale Soft Labels Necessary for Large-scale Dataset Distillation? NeurIPS 2024."
)

_LAZY = {name: "rd3_plugin_lpld.statistics" for name in ("ClassBNStatistics", "class_layout", "class_statistics")}
"""Names that need torch: imported from their module on first access (PEP 562). They are left out
of `dir()` on purpose: pluggy reads every name `dir()` lists when it registers the module."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


class Config(SRe2LConfig):
    """SRe2L's settings with LPLD's presets (<= 32 px as SRe2L's CIFAR; <= 64 px lr 0.1, r_bn 0.05,
    4K iterations, roll -4..4, crop; larger lr 0.25, r_bn 0.01, 4K, roll 0..32, crop). A batch
    holds whole classes (`batch_size // ipc` of them)."""

    stats_pool: PositiveInt | None = Field(
        default=None, description="random images per class for the class statistics (None: every image)"
    )


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="lpld",
        summary="LPLD recovery: SRe2L with each class matched to class-conditional BatchNorm statistics",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=True,
        paper="https://arxiv.org/abs/2410.15919",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    # torch: loaded on the first synthesis only
    from rd3_plugin_sre2l.recovery import bn_teacher, recover

    from rd3_plugin_lpld.statistics import ClassBNStatistics, class_layout, class_statistics

    config: Config = ctx.config
    recipe = resolve(config, ctx.image_shape, PRESETS)
    teacher = bn_teacher(ctx, "lpld")
    statistics, cached = class_statistics(ctx, teacher, config.stats_pool)
    bn = ClassBNStatistics(teacher, statistics, recipe.first_bn_multiplier)
    batches = class_layout(ctx.num_classes, ctx.ipc, recipe.batch_size)
    synset = recover(ctx, recipe, method="lpld", batches=batches, bn=bn)
    synset.meta["class_statistics_cached"] = cached
    return synset


__all__ = ["SMOKE_CONFIG", "PRESETS", "ClassBNStatistics", "Config", "class_layout", "class_statistics"]
