"""rd3-harness plugin `sre2l`: SRe2L's recovery of images from a BatchNorm teacher (Yin, Xing and
Shen, NeurIPS 2023). Its pieces (`Config`, `resolve`, `recover`) are reused by `rd3-plugin-cda`.

Importing this module imports no torch: the recovery (`recover`, from `rd3_plugin_sre2l.recovery`)
is loaded on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_plugin_sre2l.config import MIN_SCALE, PRESETS, Config, Preset, Recipe, preset_for, resolve

if TYPE_CHECKING:
    from rd3_plugin_sre2l.recovery import recover

SMOKE_CONFIG = {"iterations": 20}
"""Config overrides that make a smoke synthesis take seconds (used by the conformance check)."""

CITATION = (
    "Zeyuan Yin, Eric Xing, Zhiqiang Shen. Squeeze, Recover and Relabel: Dataset Condensation at "
    "ImageNet Scale From A New Perspective. NeurIPS 2023."
)

_LAZY = {"recover": "rd3_plugin_sre2l.recovery"}
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
    from rd3_plugin_sre2l.recovery import recover  # torch: loaded on the first synthesis only

    return recover(ctx, resolve(ctx.config, ctx.image_shape), method="sre2l")


__all__ = ["SMOKE_CONFIG", "MIN_SCALE", "PRESETS", "Config", "Preset", "Recipe", "preset_for", "recover", "resolve"]
