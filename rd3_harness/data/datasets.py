"""Opening registered datasets (`Registries.datasets`) by name from the data root. Nothing is
downloaded unless the user asks for it."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from rd3_harness.data.real import Split
from rd3_harness.errors import DataMissing, UsageError
from rd3_harness.registry import DatasetInfo
from rd3_harness.settings import Settings


def get_dataset(known: Mapping[str, DatasetInfo], name: str) -> DatasetInfo:
    """The registered dataset `name` (from `Registries.datasets`), or a UsageError listing them."""
    if name not in known:
        raise UsageError(f"unknown dataset {name!r}; registered: {', '.join(sorted(known))}")
    return known[name]


@functools.lru_cache(maxsize=4)
def _load(info: DatasetInfo, folder: Path) -> tuple[Split, Split]:
    return info.load(folder)


def open_dataset(known: Mapping[str, DatasetInfo], name: str, settings: Settings) -> tuple[DatasetInfo, Split, Split]:
    """Find and read a registered dataset; a missing one raises DataMissing saying where we looked
    and how to get it."""
    info = get_dataset(known, name)
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
    train, test = _load(info, folder)
    for split, which in ((train, "train"), (test, "test")):
        if split.channels != info.channels:
            raise UsageError(f"{folder}: {which} images have {split.channels} channels, expected {info.channels}")
    return info, train, test
