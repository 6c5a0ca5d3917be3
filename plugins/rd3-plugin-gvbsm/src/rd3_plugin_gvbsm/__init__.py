"""G-VBSM (Shao et al., CVPR 2024): generalized large-scale data condensation via various
backbone and statistical matching.

Images start as noise and are optimized, one teacher per step (round-robin over the protocol's
`synthesis_teachers`), against cross-entropy + BatchNorm statistics + convolution-input channel and
patch statistics (synthetic side: an EMA over steps, straight-through) + data densification.

Importing this module imports no torch: the recovery (`recover`, `synthesis_teachers`, from
`rd3_plugin_gvbsm.recovery`) is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_plugin_gvbsm.config import CIFAR, PRESETS, Config, Recipe

if TYPE_CHECKING:
    from rd3_plugin_gvbsm.recovery import recover, synthesis_teachers

__all__ = ["SMOKE_CONFIG", "CIFAR", "PRESETS", "Config", "Recipe", "recover", "synthesis_teachers"]

SMOKE_CONFIG = {"iterations": 20, "stats_images": 20}
"""Config overrides that make a synthesis on the smoke protocol fast (read by `check_plugin`)."""

CITATION = (
    "Shao, Yin, Zhang, Shen. Generalized Large-Scale Data Condensation via Various Backbone and "
    "Statistical Matching. CVPR 2024. arXiv:2311.17950"
)

_LAZY = {"recover": "rd3_plugin_gvbsm.recovery", "synthesis_teachers": "rd3_plugin_gvbsm.recovery"}
"""Names that need torch: imported from their module on first access (PEP 562). They are left out
of `dir()` on purpose: pluggy reads every name `dir()` lists when it registers the module."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="gvbsm",
        summary="G-VBSM: multi-teacher BN + convolution statistics matching with data densification",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=True,
        paper="https://arxiv.org/abs/2311.17950",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    from rd3_plugin_gvbsm.recovery import recover, synthesis_teachers  # torch: on the first synthesis only

    teachers = synthesis_teachers(ctx, "gvbsm")
    recipe = ctx.config.recipe(ctx.image_shape[-1])
    images, labels, meta = recover(ctx, recipe, teachers, method="gvbsm")
    return SyntheticSet(images=images, labels=labels, meta=meta)
