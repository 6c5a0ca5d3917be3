"""Opening datasets by name from the data root: registered ones (`Registries.datasets`), and
folders that need no plugin: `imagefolder:PATH` (train/ and val/ class folders) and `shards:PATH`
(webdataset tar shards, train-*.tar and val-*.tar). Nothing is downloaded unless the user asks
for it. No torch at import."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rd3_harness.data.folders import SHARD_PATTERNS, class_folders, shard_files
from rd3_harness.errors import DataMissing, UsageError
from rd3_harness.registry import DatasetInfo
from rd3_harness.settings import Settings

if TYPE_CHECKING:
    from rd3_harness.data.real import Split

IMAGEFOLDER, SHARDS = "imagefolder:", "shards:"
FOLDER_SPECS = (IMAGEFOLDER, SHARDS)
"""Prefixes of a dataset name that is a folder rather than a registered dataset."""
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGEFOLDER_CHANNELS = 3
"""Channels of a folder dataset (images are converted to RGB)."""


def folder_spec(name: str) -> str | None:
    """The prefix (`imagefolder:` or `shards:`) of a folder dataset's name; None for a registered one."""
    return next((prefix for prefix in FOLDER_SPECS if name.startswith(prefix)), None)


def folder_of(name: str, data_root: Path) -> Path | None:
    """The folder an `imagefolder:PATH` or `shards:PATH` name points to (PATH absolute, or
    relative to the data root); None for a registered dataset's name."""
    prefix = folder_spec(name)
    if prefix is None:
        return None
    path = Path(name.removeprefix(prefix)).expanduser()
    return path if path.is_absolute() else data_root / path


def load_image_folders(path: Path, expected_classes: int | None = None) -> tuple[Split, Split]:
    """(train, test) of a folder with train/ and val/ class folders (Tiny-ImageNet's original
    val/ layout, images/ plus val_annotations.txt, included); val's classes must be train's."""
    from rd3_harness.data.index import index_folder
    from rd3_harness.data.readers import read_tiny_val
    from rd3_harness.data.real import FolderSplit

    train = index_folder(path / "train")
    names = train.tree.classes
    if expected_classes is not None and len(names) != expected_classes:
        raise UsageError(f"{path}/train has {len(names)} class folders, expected {expected_classes}")
    val = path / "val"
    if (val / "val_annotations.txt").is_file():
        vfiles, vlabels = read_tiny_val(val, names)
        vkey = None  # keyed by paths and labels (the annotation file fixes them)
    else:
        test = index_folder(val, names)
        vfiles, vlabels, vkey = test.tree.paths(), test.tree.labels, _pixel_key(val, test.digest)
    return (
        FolderSplit(
            train.tree.paths(), train.tree.labels, IMAGEFOLDER_CHANNELS, _pixel_key(path / "train", train.digest)
        ),
        FolderSplit(vfiles, vlabels, IMAGEFOLDER_CHANNELS, vkey),
    )


def _pixel_key(root: Path, index_digest: str) -> str:
    """The pixel cache's key of an indexed folder: its place and the index digest (which covers
    every file's size and modification time, so a changed file is decoded again)."""
    return hashlib.sha256(f"folder:{IMAGEFOLDER_CHANNELS}:{root.absolute()}:{index_digest}".encode()).hexdigest()


def has_splits(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "val").is_dir()


def folder_problems(name: str, data_root: Path) -> list[str]:
    """What stops a folder dataset from being opened, found by listing folders (no image or
    shard is read); empty when it looks usable or the name is a registered dataset's."""
    prefix, folder = folder_spec(name), folder_of(name, data_root)
    if folder is None:
        return []
    where = "" if Path(name.removeprefix(prefix)).expanduser().is_absolute() else f" (under the data root {data_root})"
    if not folder.is_dir():
        return [f"dataset.name: {name}: folder {folder} not found{where}; it needs {needs_of(name)}"]
    if prefix == SHARDS:
        missing = [split for split in ("train", "val") if not shard_files(folder, split)]
        return [f"dataset.name: {name}: {folder} has no {split} shards ({SHARD_PATTERNS[split]})" for split in missing]
    missing = [s for s in ("train", "val") if not (folder / s).is_dir()]
    if missing:
        return [f"dataset.name: {name}: {folder} has no {' or '.join(m + '/' for m in missing)} folder"]
    try:
        classes = class_folders(folder / "train")
        if not (folder / "val" / "val_annotations.txt").is_file():
            class_folders(folder / "val", classes)
    except UsageError as exc:
        return [f"dataset.name: {name}: {exc}"]
    return []


def folder_info(name: str, data_root: Path, resolution: int) -> DatasetInfo:
    """The dataset a folder dataset's name describes: classes are train/'s class folders (or
    0..the largest train label of shards), 3 channels, ImageNet mean/std, native resolution the
    protocol's. Raises DataMissing (with what is wrong) when the folder is not usable. Shards
    are indexed here (the number of classes is in their labels)."""
    folder = folder_of(name, data_root)
    problems = folder_problems(name, data_root)
    if folder is None or problems:
        raise DataMissing(problems[0].removeprefix("dataset.name: ") if problems else f"{name}: not a folder dataset")
    if folder_spec(name) == SHARDS:
        from rd3_harness.data.shards import load_shards

        train, val, num_classes = load_shards(folder, IMAGEFOLDER_CHANNELS)
        load = lambda path: (train, val)  # noqa: E731
        layout = "webdataset tar shards"
    else:
        num_classes = len(class_folders(folder / "train"))
        load = functools.partial(load_image_folders, expected_classes=num_classes)
        layout = "ImageFolder layout (train/ and val/)"
    return DatasetInfo(
        name=name,
        num_classes=num_classes,
        channels=IMAGEFOLDER_CHANNELS,
        resolution=resolution,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        candidates=lambda root: [folder],
        is_present=lambda path: not folder_problems(name, data_root),
        load=load,
        how_to_get=f"put {needs_of(name)} in {folder}",
        description=f"{folder}: {num_classes} classes, {layout}",
    )


def needs_of(name: str) -> str:
    return "train/ and val/ class folders" if folder_spec(name) == IMAGEFOLDER else "train-*.tar and val-*.tar shards"


def get_dataset(known: Mapping[str, DatasetInfo], name: str) -> DatasetInfo:
    """The registered dataset `name` (from `Registries.datasets`), or a UsageError listing them."""
    if name not in known:
        raise UsageError(
            f"unknown dataset {name!r}; registered: {', '.join(sorted(known))} "
            f"(or {IMAGEFOLDER}PATH / {SHARDS}PATH for a folder of class folders / tar shards)"
        )
    return known[name]


@functools.lru_cache(maxsize=4)
def _load(info: DatasetInfo, folder: Path) -> tuple[Split, Split]:
    return info.load(folder)


def open_dataset(
    known: Mapping[str, DatasetInfo], name: str, settings: Settings, *, resolution: int | None = None
) -> tuple[DatasetInfo, Split, Split]:
    """Find and read a dataset (registered, or a folder dataset at the protocol's `resolution`);
    a missing one raises DataMissing saying where we looked and how to get it. Folder datasets'
    file indexes are cached under RD3_HOME/index."""
    from rd3_harness.data.index import cached_under

    root = settings.data_root
    if folder_of(name, root) is not None:
        if resolution is None:
            raise UsageError(f"{name}: a folder dataset is opened at a protocol's resolution")
        info = folder_info(name, root, resolution)
        with cached_under(settings.home / "index"):
            train, test = info.load(folder_of(name, root))  # not memoized: the index sees changes
        return info, train, test
    info = get_dataset(known, name)
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
    with cached_under(settings.home / "index"):
        train, test = _load(info, folder)
    for split, which in ((train, "train"), (test, "test")):
        if split.channels != info.channels:
            raise UsageError(f"{folder}: {which} images have {split.channels} channels, expected {info.channels}")
    return info, train, test
