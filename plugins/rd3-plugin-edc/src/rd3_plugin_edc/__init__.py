"""EDC (Shao et al., NeurIPS 2024): elucidating the design space of dataset condensation.

G-VBSM's multi-teacher statistics matching (from rd3-plugin-gvbsm) with EDC's choices: images
start from real images (random ones, or RDED's output from rd3-plugin-rded), a weak augmentation
(random-resized crop 0.5-1 and flip, no roll), soft category-aware matching (each statistic is
matched half to the global and half to the class-conditional real target), and optionally the
flatness term (off, as in the released code).

Importing this module imports no torch: `initial_images` (from `rd3_plugin_edc.initialization`)
and G-VBSM's recovery are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import rd3_plugin_rded
from pydantic import Field
from rd3_plugin_gvbsm import CIFAR
from rd3_plugin_gvbsm import Config as GvbsmConfig

from rd3_harness import MethodInfo, SyntheticSet, hookimpl

if TYPE_CHECKING:
    from rd3_plugin_edc.initialization import initial_images

__all__ = ["SMOKE_CONFIG", "PRESETS", "Config", "initial_images"]

SMOKE_CONFIG = {"iterations": 20, "stats_images": 20}
"""Config overrides that make a synthesis on the smoke protocol fast (read by `check_plugin`)."""

CITATION = (
    "Shao, Zhou, Chen, Shen. Elucidating the Design Space of Dataset Condensation. NeurIPS 2024. arXiv:2404.13733"
)

_LAZY = {"initial_images": "rd3_plugin_edc.initialization"}
"""Names that need torch: imported from their module on first access (PEP 562). They are left out
of `dir()` on purpose: pluggy reads every name `dir()` lists when it registers the module."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


EDC_CIFAR = CIFAR | dict(
    iterations=2000,
    drop_rate=0.0,
    dd_weight=0.0,
    jitter=0,
    crop="resized",
    scale=(0.5, 1.0),
    init="real",
    category_weight=0.5,
    flatness_weight=0.0,
    flatness_momentum=0.99,
)
PRESETS: dict[int, dict[str, Any]] = {
    # the CPU protocols (28 px): CIFAR's recipe and budget (2000 steps) with 1000 real images per
    # class for the statistics (a sample of the population moments)
    28: EDC_CIFAR | dict(stats_images=1000),
    32: EDC_CIFAR,  # Branch_CIFAR_100/recover/recover.sh
    64: EDC_CIFAR,  # Branch_Tiny_ImageNet/recover/recover.sh
    224: EDC_CIFAR | dict(iterations=1000, batch_size=80, r_loss=0.1, patch=16, init="rded"),  # ImageNet-1k
}


class Config(GvbsmConfig):
    """EDC settings: G-VBSM's keys (with EDC's presets; see `PRESETS` and the README) plus the
    initialization, the category-aware blend and the flatness term."""

    presets: ClassVar[dict[int, dict[str, Any]]] = PRESETS

    init: Literal["real", "rded"] | None = Field(
        None, description="starting images: random real images of the class, or RDED's output (rd3-plugin-rded)"
    )
    category_weight: float | None = Field(
        None, ge=0, le=1, description="share of the class-conditional target in each statistics loss (EDC's alpha)"
    )
    flatness_weight: float | None = Field(
        None, ge=0, description="weight of the flatness term, KL(teacher on EMA of the images || on the images); 0: off"
    )
    flatness_momentum: float | None = Field(None, ge=0, lt=1, description="EMA momentum of the images for flatness")
    rded: rd3_plugin_rded.Config = Field(
        default_factory=rd3_plugin_rded.Config, description="RDED's settings for init 'rded', e.g. {candidates: 100}"
    )


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="edc",
        summary="EDC: G-VBSM from real images, weak augmentation, soft category-aware matching",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=True,
        paper="https://arxiv.org/abs/2404.13733",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    # torch: loaded on the first synthesis only
    from rd3_plugin_gvbsm.recovery import recover, synthesis_teachers

    from rd3_plugin_edc.initialization import initial_images

    teachers = synthesis_teachers(ctx, "edc")
    resolution = ctx.image_shape[-1]
    init, init_meta = initial_images(ctx, ctx.config.values(resolution)["init"], ctx.config.rded)
    images, labels, meta = recover(ctx, ctx.config.recipe(resolution), teachers, method="edc", init=init)
    return SyntheticSet(images=images, labels=labels, meta=meta | init_meta)
