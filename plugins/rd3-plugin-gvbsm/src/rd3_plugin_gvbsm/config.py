"""G-VBSM's settings: a frozen config whose unset (None) values come from the preset of the
dataset's resolution, the presets (the paper's scripts per scale) and the resolved `Recipe`.

Imports no torch, so loading the plugin (`rd3h plugins`, `rd3h protocol validate`) stays light."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from rd3_harness import Augmentation, RandomCrop, RandomResizedCrop

CIFAR = dict(
    iterations=4000,
    lr=0.05,
    batch_size=100,
    r_loss=0.01,
    first_multiplier=10.0,
    momentum=0.8,
    drop_rate=0.4,
    dd_weight=1.0,
    tau=4.0,
    patch=4,
    jitter=32,
    crop="pad",
    padding=4,
    scale=(0.08, 1.0),
    stats_images=None,
)
PRESETS: dict[int, dict[str, Any]] = {
    # the CPU protocols (Fashion-MNIST, 28 px): CIFAR's recipe and budget (4000 steps, lr 0.05),
    # a 4-pixel jitter (a cyclic roll of up to 32 pixels moves a 28-pixel image anywhere) and 1000
    # real images per class for the statistics (a sample of the population moments)
    28: CIFAR | dict(jitter=4, stats_images=1000),
    32: CIFAR,  # Branch_CIFAR_100/recover/recover.sh with the script's defaults
    64: CIFAR | dict(padding=8),  # Branch_Tiny_ImageNet
    224: CIFAR | dict(lr=0.1, batch_size=80, momentum=0.4, drop_rate=0.0, patch=16, crop="resized"),  # ImageNet-1k
}


@dataclass(frozen=True)
class Recipe:
    """A fully resolved synthesis recipe (every value set)."""

    iterations: int
    lr: float
    batch_size: int
    r_loss: float
    first_multiplier: float
    momentum: float
    drop_rate: float
    dd_weight: float
    tau: float
    patch: int
    jitter: int
    augmentation: Augmentation
    stats_images: int | None
    category_weight: float = 0.0
    flatness_weight: float = 0.0
    flatness_momentum: float = 0.99


def augmentation(crop: str, padding: int, scale: tuple[float, float]) -> Augmentation:
    """Random crop (zero-padded by `padding`) or random-resized crop (`scale`), then a flip."""
    return Augmentation(
        random_crop=RandomCrop(padding=padding) if crop == "pad" else None,
        random_resized_crop=RandomResizedCrop(scale=scale) if crop == "resized" else None,
        horizontal_flip=True,
    )


class Config(BaseModel, frozen=True, extra="forbid"):
    """G-VBSM settings. Every value left unset (null) comes from the preset of the resolution:
    28 px (the CPU protocols), 32 px (CIFAR), 64 px (Tiny-ImageNet), 224 px (ImageNet-1k); see
    `PRESETS` and the README."""

    presets: ClassVar[dict[int, dict[str, Any]]] = PRESETS

    iterations: int | None = Field(None, ge=1, description="optimization steps per batch")
    lr: float | None = Field(None, gt=0, description="Adam learning rate on the pixels, cosine to 0")
    batch_size: int | None = Field(None, ge=1, description="images per optimization batch (whole classes)")
    r_loss: float | None = Field(None, ge=0, description="weight of the BatchNorm and convolution statistics losses")
    first_multiplier: float | None = Field(None, ge=0, description="extra weight of the first matched layer")
    momentum: float | None = Field(None, ge=0, lt=1, description="EMA momentum of the synthetic statistics")
    drop_rate: float | None = Field(None, ge=0, lt=1, description="probability of skipping a convolution term per step")
    dd_weight: float | None = Field(None, ge=0, description="weight of the data-densification loss")
    tau: float | None = Field(None, gt=0, description="temperature of the densification target")
    patch: int | None = Field(None, ge=1, description="side of the patches of the patch statistics")
    jitter: int | None = Field(None, ge=0, description="largest cyclic shift of the batch per step, in pixels")
    crop: Literal["pad", "resized", "none"] | None = Field(
        None, description="per-step crop before the flip: random crop after zero padding, random-resized crop, or none"
    )
    padding: int | None = Field(None, ge=1, description="zero padding of the 'pad' crop")
    scale: tuple[float, float] | None = Field(None, description="area range of the 'resized' crop")
    stats_images: int | None = Field(
        None, ge=1, description="real images per class for the real statistics (the preset's null: all)"
    )

    def values(self, resolution: int) -> dict[str, Any]:
        """The preset of the smallest scale at or above `resolution` (the largest beyond it),
        overridden by the values set here."""
        scale = next((s for s in sorted(self.presets) if resolution <= s), max(self.presets))
        return self.presets[scale] | {k: v for k, v in self.model_dump().items() if v is not None}

    def recipe(self, resolution: int) -> Recipe:
        v = self.values(resolution)
        fields = set(Recipe.__dataclass_fields__) - {"augmentation"}
        aug = augmentation(v["crop"], v["padding"], tuple(v["scale"]))
        return Recipe(augmentation=aug, **{k: x for k, x in v.items() if k in fields})
