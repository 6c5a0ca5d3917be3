"""RDED (Sun et al., CVPR 2024): optimization-free dataset distillation.

Per class: draw real images, cut random-resized square crops, score each crop by the observer's
(the protocol teacher's) cross-entropy, keep the best crop per image and the `ipc * factor**2`
best overall, and stitch `factor x factor` of them into each output image.

Importing this module imports no torch (nor torchvision): `distill` (from
`rd3_plugin_rded.distillation`) is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_plugin_rded.config import Config, factor_for

if TYPE_CHECKING:
    from rd3_plugin_rded.distillation import distill

__all__ = ["SMOKE_CONFIG", "Config", "distill", "factor_for"]

SMOKE_CONFIG = {"candidates": 20}
"""Config overrides that make a synthesis on the smoke protocol fast (read by `check_plugin`)."""

CITATION = (
    "Sun, Shi, Yu, Lin. On the Diversity and Realism of Distilled Dataset: "
    "An Efficient Dataset Distillation Paradigm. CVPR 2024. arXiv:2312.03526"
)

_LAZY = {"distill": "rd3_plugin_rded.distillation"}
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
        name="rded",
        summary="RDED: teacher-scored real crops stitched into factor x factor grids (no optimization)",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=True,
        paper="https://arxiv.org/abs/2312.03526",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    from rd3_plugin_rded.distillation import distill  # torch: loaded on the first synthesis only

    images, labels, meta = distill(ctx, ctx.config)
    return SyntheticSet(images=images, labels=labels, meta=meta)
