"""The dataset registry: datasets are registered by plugins (`register_datasets`) and opened by
name from the data root. Nothing is downloaded unless the user asks for it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rd3_harness.data.real import Split
from rd3_harness.errors import DataMissing, UsageError
from rd3_harness.settings import Settings


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


def datasets() -> dict[str, DatasetInfo]:
    from rd3_harness.plugins import get_plugins

    return get_plugins().datasets


def get_dataset(name: str) -> DatasetInfo:
    known = datasets()
    if name not in known:
        raise UsageError(f"unknown dataset {name!r}; registered: {', '.join(sorted(known))}")
    return known[name]


@functools.lru_cache(maxsize=4)
def _load(name: str, folder: Path) -> tuple[Split, Split]:
    return get_dataset(name).load(folder)


def open_dataset(name: str, settings: Settings) -> tuple[DatasetInfo, Split, Split]:
    """Find and read a dataset; a missing one raises DataMissing saying where we looked and how
    to get it."""
    info = get_dataset(name)
    root = settings.data_root
    folder = info.locate(root)
    if folder is None and settings.download:
        if info.download is None:
            raise DataMissing(f"{name} cannot be downloaded automatically. {info.how_to_get}")
        root.mkdir(parents=True, exist_ok=True)
        info.download(root)
        folder = info.locate(root)
    if folder is None:
        looked = "\n".join(f"  {p}" for p in info.candidates(root))
        hint = " or rerun with --download" if info.download else ""
        raise DataMissing(
            f"dataset {name} not found. Looked in:\n{looked}\n"
            f"To get it: {info.how_to_get}{hint}. Set RD3_DATA_ROOT to the folder that holds it."
        )
    train, test = _load(name, folder)
    for split, which in ((train, "train"), (test, "test")):
        if split.channels != info.channels:
            raise UsageError(f"{folder}: {which} images have {split.channels} channels, expected {info.channels}")
    return info, train, test
