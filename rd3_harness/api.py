"""The public plugin API: every name a plugin (or its tests, through `rd3_harness.testing`) may
import, re-exported from the package root (`from rd3_harness import hookimpl, MethodInfo`).
Anything else under `rd3_harness` is internal and may change without notice; CONTRIBUTING.md
documents each name below, and a test keeps the first-party plugins on this surface.

Names are loaded on first use (PEP 562), so `import rd3_harness` stays cheap: `hookimpl`,
`MethodInfo` and the error types import no torch; the augmentation and feature helpers do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rd3_harness.version import __version__  # noqa: F401 (re-exported)

_SOURCES: dict[str, str] = {
    # the hooks and the contract
    "hookimpl": "rd3_harness.hookspecs",
    "MethodInfo": "rd3_harness.contract",
    "SynthesisContext": "rd3_harness.contract",
    "SyntheticSet": "rd3_harness.contract",
    "RealData": "rd3_harness.data.real",
    # what register_datasets registers
    "DatasetInfo": "rd3_harness.registry",
    "Split": "rd3_harness.data.real",
    "TensorSplit": "rd3_harness.data.real",
    "FolderSplit": "rd3_harness.data.real",
    # errors a plugin raises
    "UsageError": "rd3_harness.errors",
    "PluginFailure": "rd3_harness.errors",
    # batched, seeded augmentation (the engine's own) and its specs
    "Augmenter": "rd3_harness.training.augment",
    "AugmentParams": "rd3_harness.training.augment",
    "resized_crop_boxes": "rd3_harness.training.augment",
    "beta": "rd3_harness.training.augment",
    "Augmentation": "rd3_harness.protocol.schema",
    "RandomResizedCrop": "rd3_harness.protocol.schema",
    "RandomCrop": "rd3_harness.protocol.schema",
    "ShufflePatches": "rd3_harness.protocol.schema",
    "CutMix": "rd3_harness.protocol.schema",
    "MixUp": "rd3_harness.protocol.schema",
    "NoMix": "rd3_harness.protocol.schema",
    # features and digests
    "embed": "rd3_harness.models",
    "embed_real": "rd3_harness.models",
    "weights_digest": "rd3_harness.hashing",
}

__all__ = sorted([*_SOURCES, "__version__"])


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'rd3_harness' has no attribute {name!r} (public names: {', '.join(__all__)})")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for editors and type checkers
    pass
