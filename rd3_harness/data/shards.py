"""Webdataset-style tar shards as a dataset split: a sample is the tar members that share a key
(`key.jpg` or another image suffix, and `key.cls`, the label as decimal text); other members
(`key.json`, ...) are ignored. Images are read in place by their offset in the shard, so shards
must be plain `.tar` (a compressed tar has no random access)."""

from __future__ import annotations

import hashlib
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rd3_harness.data.folders import SHARD_PATTERNS, shard_files
from rd3_harness.data.readers import IMAGE_SUFFIXES, decode_image
from rd3_harness.data.real import Split, resize_square
from rd3_harness.errors import UsageError

_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
"""webdataset's rule: the key is the member's path up to the first dot of its file name."""


@dataclass
class ShardIndex:
    """Where each sample's image lies: shard, byte offset and size; and its label."""

    shards: list[str]
    shard: list[int] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    digest: str = ""
    """sha256 of every shard's name, size and modification time and every sample's key and label."""


def _label(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> int:
    text = tar.extractfile(member).read().decode("ascii", "replace").strip()
    if not text.isdigit():
        raise UsageError(f"{where}: label {text[:20]!r} is not a class index")
    return int(text)


def index_shards(paths: list[Path]) -> ShardIndex:
    """Read the tar headers (and the small `.cls` members) of each shard, in the given order."""
    index = ShardIndex([str(p) for p in paths])
    h = hashlib.sha256()
    for s, path in enumerate(paths):
        st = path.stat()
        h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        samples: dict[str, dict] = {}
        try:
            with tarfile.open(path, mode="r:") as tar:
                for member in tar:
                    match = _KEY.match(member.name) if member.isfile() else None
                    if match is None:
                        continue
                    key, ext = match.groups()
                    sample = samples.setdefault(key, {})
                    if ext.lower() == "cls":
                        sample["label"] = _label(tar, member, f"{path}:{member.name}")
                    elif f".{ext.lower()}" in IMAGE_SUFFIXES:
                        sample["image"] = (member.offset_data, member.size)
        except tarfile.ReadError as exc:
            raise UsageError(
                f"{path}: not a plain tar shard ({exc}); compressed shards cannot be read in place"
            ) from None
        for key, sample in samples.items():
            missing = [part for part in ("image", "label") if part not in sample]
            if missing == ["image", "label"]:
                continue  # only other members (metadata)
            if missing:
                raise UsageError(f"{path}: sample {key!r} has no {missing[0]} (needs {key}.jpg and {key}.cls)")
            index.shard.append(s)
            index.offset.append(sample["image"][0])
            index.size.append(sample["image"][1])
            index.keys.append(key)
            index.labels.append(sample["label"])
            h.update(f"{key}\0{sample['label']}\n".encode())
    index.digest = h.hexdigest()
    return index


class ShardSplit(Split):
    """Samples of webdataset tar shards, decoded on access."""

    def __init__(self, index: ShardIndex, channels: int):
        self.index, self.channels = index, channels
        self.labels = torch.tensor(index.labels, dtype=torch.int64)

    def read(self, i: int) -> bytes:
        """The encoded image of item `i`."""
        path = self.index.shards[self.index.shard[i]]
        with open(path, "rb") as f:
            f.seek(self.index.offset[i])
            data = f.read(self.index.size[i])
        if len(data) != self.index.size[i]:
            raise UsageError(f"{path}: truncated at sample {self.index.keys[i]!r}; rescan after fixing the shard")
        return data

    def decode(self, i: int) -> torch.Tensor:
        """Item `i` as full-size uint8 [C, H, W]."""
        name = f"{self.index.shards[self.index.shard[i]]}:{self.index.keys[i]}"
        return decode_image(self.read(i), self.channels, name=name)

    @property
    def cache_key(self) -> str | None:
        return self.index.digest

    def subset(self, indices: torch.Tensor) -> ShardSplit:
        """Some of the samples (same shards), keyed by the shards' digest and the indices taken."""
        picked = indices.tolist()
        index = ShardIndex(
            self.index.shards,
            *([column[i] for i in picked] for column in (self.index.shard, self.index.offset, self.index.size)),
            [self.index.keys[i] for i in picked],
            [self.index.labels[i] for i in picked],
            hashlib.sha256(f"{self.index.digest}\0{picked}".encode()).hexdigest(),
        )
        return ShardSplit(index, self.channels)

    def pixels(self, indices: torch.Tensor, resolution: int, *, test: bool = False) -> torch.Tensor:
        return torch.stack(
            [resize_square(self.decode(int(i))[None], resolution, test=test)[0] for i in indices.tolist()]
        )


def load_shards(folder: Path, channels: int) -> tuple[ShardSplit, ShardSplit, int]:
    """(train, val, number of classes) of a folder of shards; classes are 0..max train label and
    each needs a training sample."""
    splits = []
    for split in ("train", "val"):
        files = shard_files(folder, split)
        if not files:
            raise UsageError(f"{folder}: no {split} shards ({SHARD_PATTERNS[split]})")
        splits.append(ShardSplit(index_shards(files), channels))
    train, val = splits
    if len(train) == 0:
        raise UsageError(f"{folder}: the train shards hold no samples (key.jpg + key.cls)")
    num_classes = int(train.labels.max()) + 1
    counts = torch.bincount(train.labels, minlength=num_classes)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise UsageError(f"{folder}: class(es) {empty[:5]} have no training sample; labels must be 0..C-1")
    if len(val) and int(val.labels.max()) >= num_classes:
        raise UsageError(f"{folder}: val labels go up to {int(val.labels.max())}, train has {num_classes} classes")
    return train, val, num_classes
