"""RDED's settings. Imports no torch, so loading the plugin (`rd3h plugins`, `rd3h protocol
validate`) stays light."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Config(BaseModel, frozen=True, extra="forbid"):
    """RDED settings (defaults: the paper's scripts at every scale)."""

    candidates: int = Field(300, ge=1, description="real images drawn per class (RDED's mipc)")
    crops: int = Field(5, ge=1, description="random square crops per real image (num_crop)")
    factor: int | None = Field(
        None, ge=1, description="crops per side of an output image; None: 1 up to 64 px, 2 above (RDED's scripts)"
    )
    scale: tuple[float, float] = Field((0.08, 1.0), description="area range of the random-resized crops")


def factor_for(resolution: int) -> int:
    """RDED's factor: 1 for CIFAR/Tiny-ImageNet sizes (<= 64 px), 2 for 128/224 px."""
    return 1 if resolution <= 64 else 2
