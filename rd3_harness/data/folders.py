"""Class folders of an ImageFolder tree (which sub-folders are classes, in which order) and the
shard files of a folder of tar shards. Listing only (no file is read, no torch)."""

from __future__ import annotations

import re
from pathlib import Path

from rd3_harness.errors import UsageError


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def check_class_order(folder: Path, names: list[str]) -> None:
    """Refuse class folder names whose text order is not the order their numbers say ("class10"
    before "class2"): other tools sort them as text, and a set labelled one way and evaluated the
    other scores chance."""
    text, natural = sorted(names), sorted(names, key=_natural)
    if text != natural:
        at = next(i for i, (a, b) in enumerate(zip(text, natural, strict=True)) if a != b)
        raise UsageError(
            f"{folder}: class folders sort differently as text and by their numbers ({text[at]!r} comes "
            f"before {natural[at]!r} as text); zero-pad the numbers so that both orders agree, "
            f"or name the folders 0..{len(names) - 1}"
        )


def class_folders(folder: Path, classes: list[str] | None = None) -> list[str]:
    """The class folder names of `folder` (hidden ones ignored), in class order: folders named by
    numbers alone in numeric order (folder k is class k), other names sorted as text (as
    torchvision does). With `classes` given, the folders must be exactly those."""
    try:
        found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    except FileNotFoundError:
        raise UsageError(f"{folder}: no such folder") from None
    if classes is not None:
        if set(found) != set(classes):
            missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
            raise UsageError(
                f"{folder}: class folders differ from the training split's "
                f"(missing: {missing[:5]}, unexpected: {extra[:5]}); both splits need the same class folders"
            )
        return list(classes)
    if not found:
        raise UsageError(f"{folder}: no class folders (expected one sub-folder per class)")
    if all(name.isdigit() for name in found):
        by_value = sorted(found, key=int)
        twins = [a for a, b in zip(by_value, by_value[1:]) if int(a) == int(b)]
        if twins:
            raise UsageError(f"{folder}: class folders {twins[0]!r} and another name the same number")
        return by_value
    check_class_order(folder, found)
    return found


SHARD_PATTERNS = {"train": "*train*.tar", "val": "*val*.tar"}
"""Shard names of each split (`val-` and `validation-` both match)."""


def shard_files(folder: Path, split: str) -> list[Path]:
    """The shards of `split` in `folder`, sorted by name."""
    return sorted(p for p in folder.glob(SHARD_PATTERNS[split]) if p.is_file() and not p.name.startswith("."))
