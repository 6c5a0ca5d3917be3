"""DWA (Du et al., NeurIPS 2024): diversity-driven synthesis through directed weight adjustment.

SRe2L-style recovery from real images, one batch (one image per class) per IPC index: at the
batch's first step the teacher's weights are moved along the gradient of its loss on the batch's
first augmented view (so each IPC index sees a slightly different teacher: more diverse images),
and restored after the IPC index.

Importing this module imports no torch: the synthesis (`rd3_plugin_dwa.synthesis`) and
`directed_adjustment` (from `rd3_plugin_dwa.adjust`) are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from rd3_harness import MethodInfo, SyntheticSet, hookimpl

if TYPE_CHECKING:
    from rd3_plugin_dwa.adjust import directed_adjustment

__all__ = ["SMOKE_CONFIG", "PRESETS", "Config", "directed_adjustment"]

SMOKE_CONFIG = {"iterations": 20}
"""Config overrides that make a synthesis on the smoke protocol fast (read by `check_plugin`)."""

CITATION = (
    "Du, Zhang, Hu, Huang, Zhou. Diversity-Driven Synthesis: Enhancing Dataset Distillation through "
    "Directed Weight Adjustment. NeurIPS 2024. arXiv:2409.17612"
)

_LAZY = {"directed_adjustment": "rd3_plugin_dwa.adjust"}
"""Names that need torch: imported from their module on first access (PEP 562). They are left out
of `dir()` on purpose: pluggy reads every name `dir()` lists when it registers the module."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


CIFAR = dict(
    iterations=1000,
    lr=0.25,
    batch_size=100,
    r_bn=0.01,
    first_bn_multiplier=10.0,
    r_var=11.0,
    jitter=4,
    crop="none",
    scale=(0.08, 1.0),
    flip=False,
    rho=0.015,
    steps=12,
)
PRESETS: dict[int, dict[str, Any]] = {
    28: CIFAR,  # the CPU protocols (Fashion-MNIST, 28 px): CIFAR's recipe as run_cifar.sh runs it
    32: CIFAR,  # scripts/run_cifar.sh (AngusDujw/Diversity-Driven-Synthesis)
    64: CIFAR | dict(iterations=2000, lr=0.1, batch_size=200, crop="resized", flip=True),  # run_tiny.sh
    224: CIFAR | dict(iterations=2000, jitter=32, crop="resized", flip=True, r_var=2.0, steps=15),  # run_imgnet.sh
}


class Config(BaseModel, frozen=True, extra="forbid"):
    """DWA settings. Every value left unset (null) comes from the preset of the resolution: 28 px
    (the CPU protocols), 32 px (CIFAR), 64 px (Tiny-ImageNet), 224 px (ImageNet-1k); see `PRESETS`."""

    iterations: int | None = Field(None, ge=1, description="optimization steps per batch")
    lr: float | None = Field(None, gt=0, description="Adam learning rate on the pixels, cosine to 0")
    batch_size: int | None = Field(
        None, ge=1, description="classes per batch (one image each, one IPC index per batch)"
    )
    r_bn: float | None = Field(None, ge=0, description="weight of the BatchNorm statistics loss")
    first_bn_multiplier: float | None = Field(None, ge=0, description="extra weight of the first BatchNorm layer")
    r_var: float | None = Field(None, ge=0, description="weight of the variance term inside the BatchNorm loss")
    jitter: int | None = Field(None, ge=0, description="largest cyclic shift of the batch per step, in pixels")
    crop: Literal["resized", "none"] | None = Field(None, description="per-step random-resized crop, or none")
    scale: tuple[float, float] | None = Field(None, description="area range of the random-resized crop")
    flip: bool | None = Field(None, description="random horizontal flip per step")
    rho: float | None = Field(None, ge=0, description="magnitude of the weight adjustment (|delta| <= rho)")
    steps: int | None = Field(None, ge=1, description="gradient steps of the adjustment, each of length rho / steps")

    def values(self, resolution: int) -> dict[str, Any]:
        """The preset of the smallest scale at or above `resolution` (ImageNet's beyond 64 px),
        overridden by the values set here."""
        scale = next((s for s in sorted(PRESETS) if resolution <= s), 224)
        return PRESETS[scale] | {k: v for k, v in self.model_dump().items() if v is not None}


@hookimpl
def method_info() -> MethodInfo:
    return MethodInfo(
        name="dwa",
        summary="DWA: SRe2L recovery from real images with a directed adjustment of the teacher's weights per batch",
        config_model=Config,
        needs_teacher=True,
        needs_real_data=True,
        paper="https://arxiv.org/abs/2409.17612",
        citation=CITATION,
    )


@hookimpl
def synthesize(ctx) -> SyntheticSet:
    from rd3_plugin_dwa.synthesis import synthesize as run  # torch: loaded on the first synthesis only

    return run(ctx)
