"""SRe2L's settings: a frozen config whose unset fields come from the preset of the data's scale.

Imports no torch, so loading the plugin (`rd3h plugins`, `rd3h protocol validate`) stays light."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

PresetName = Literal["auto", "cifar", "tiny", "imagenet"]

MIN_SCALE = 0.08
"""The lower bound of the random-resized crop's scale (torchvision's default, the scripts' value)."""


@dataclass(frozen=True)
class Recipe:
    """Concrete recovery settings: a preset with the config's overrides applied."""

    preset: str
    iterations: int
    lr: float
    r_bn: float
    jitter: int
    symmetric_roll: bool
    crop: bool
    first_bn_multiplier: float
    batch_size: int


@dataclass(frozen=True)
class Preset:
    """The per-scale settings of a method's released scripts."""

    iterations: int
    lr: float
    r_bn: float
    jitter: int
    symmetric_roll: bool
    crop: bool


PRESETS: dict[str, Preset] = {
    # SRe2L/*small_dataset/recover_cifar.sh: 32 px, no multi-crop, roll by 0..4 px
    "cifar": Preset(iterations=1000, lr=0.25, r_bn=0.01, jitter=4, symmetric_roll=False, crop=False),
    # recover_tiny.sh: 64 px, random-resized crop + flip, roll by -4..4 px
    "tiny": Preset(iterations=4000, lr=0.1, r_bn=1.0, jitter=4, symmetric_roll=True, crop=True),
    # recover/recover.sh: 224 px, random-resized crop + flip, roll by 0..32 px
    "imagenet": Preset(iterations=4000, lr=0.25, r_bn=0.01, jitter=32, symmetric_roll=False, crop=True),
}


def _default(text: str):
    return Field(default=None, description=f"{text} (None: the preset's value)")


class Config(BaseModel, frozen=True, extra="forbid"):
    """SRe2L recovery. Fields left at None take the value of `preset`; `auto` picks the preset by
    image side: <= 32 px `cifar` (1K iterations, lr 0.25, r_bn 0.01, roll 0..4, no crop), <= 64 px
    `tiny` (4K, lr 0.1, r_bn 1.0, roll -4..4, crop+flip), larger `imagenet` (4K, lr 0.25,
    r_bn 0.01, roll 0..32, crop+flip)."""

    preset: PresetName = Field(default="auto", description="settings of the paper's scripts for 32, 64 or 224 px")
    iterations: PositiveInt | None = _default("optimization steps per batch")
    lr: PositiveFloat | None = _default("Adam learning rate on the pixels, cosine-decayed to 0")
    r_bn: NonNegativeFloat | None = _default("weight of the BN-statistics term")
    jitter: NonNegativeInt | None = _default("largest random roll in pixels")
    symmetric_roll: bool | None = _default("roll by -jitter..jitter instead of 0..jitter")
    crop: bool | None = _default("random-resized crop (scale 0.08-1) and flip of the batch each step")
    first_bn_multiplier: NonNegativeFloat = Field(default=10.0, description="weight of the first BN layer's term")
    batch_size: PositiveInt = Field(default=100, description="images optimized together (across classes)")


def preset_for(image_shape: tuple[int, int, int]) -> str:
    """The preset of a resolution: 32 px and below `cifar`, 64 px and below `tiny`, else `imagenet`."""
    side = max(image_shape[1:])
    return "cifar" if side <= 32 else "tiny" if side <= 64 else "imagenet"


def resolve(config: Config, image_shape: tuple[int, int, int], presets: dict[str, Preset] = PRESETS) -> Recipe:
    """The recipe for data of `image_shape`: the chosen preset, overridden by the config's set fields."""
    name = preset_for(image_shape) if config.preset == "auto" else config.preset
    values = dataclasses.asdict(presets[name])
    values.update({k: v for k, v in config.model_dump().items() if k in values and v is not None})
    return Recipe(preset=name, first_bn_multiplier=config.first_bn_multiplier, batch_size=config.batch_size, **values)
