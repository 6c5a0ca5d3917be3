"""Batched, seeded augmentation for plugins: the engine's own augmenter and the specs it takes.

Public API: use these instead of importing from `rd3_harness.posteval` (internal).
`Augmenter(spec, resolution)(x, generator)` augments a batch in model-input space with
per-sample random parameters drawn from `generator`.
"""

from rd3_harness.posteval.augment import Augmenter, AugmentParams, beta, resized_crop_boxes
from rd3_harness.protocol.schema import (
    Augmentation,
    CutMix,
    MixUp,
    NoMix,
    RandomCrop,
    RandomResizedCrop,
    ShufflePatches,
)

__all__ = [
    "AugmentParams",
    "Augmentation",
    "Augmenter",
    "CutMix",
    "MixUp",
    "NoMix",
    "RandomCrop",
    "RandomResizedCrop",
    "ShufflePatches",
    "beta",
    "resized_crop_boxes",
]
