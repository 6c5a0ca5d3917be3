"""Registry containers: plain, read-only mappings of the datasets, architectures and protocols
that plugins registered. The plugin manager (composition layer) fills them and hands them down;
nothing here knows about plugins. No torch at import."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from rd3_harness.data.real import Split


@dataclass(frozen=True)
class ModelEntry:
    """An architecture registered by `register_models`: `factory(num_classes=..., in_channels=...,
    resolution=...)` returns a freshly initialised `nn.Module`."""

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its facts, where to find it and how to read it."""

    name: str
    num_classes: int
    channels: int
    resolution: int
    """Native (or conventional) square resolution."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    candidates: Callable[[Path], list[Path]]
    """Folders to look in, given the data root, most specific first."""
    is_present: Callable[[Path], bool]
    load: Callable[[Path], tuple[Split, Split]]
    """Read (train, test) from a folder where `is_present` holds."""
    how_to_get: str
    download: Callable[[Path], None] | None = None
    """Fetch the dataset into the data root (only with --download)."""
    description: str = ""

    def locate(self, root: Path) -> Path | None:
        return next((p for p in self.candidates(root) if self.is_present(p)), None)


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Registries:
    """What the installed plugins registered, by name. Built once by the plugin manager and passed
    to whatever needs to resolve a dataset, an architecture or a protocol name."""

    datasets: Mapping[str, DatasetInfo] = field(default_factory=dict)
    models: Mapping[str, ModelEntry] = field(default_factory=dict)
    protocols: Mapping[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("datasets", "models", "protocols"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
