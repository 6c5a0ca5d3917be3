"""The decoded-pixel cache: each (split, resolution, preprocessing) of a folder or shard split is
decoded once, by parallel DataLoader workers, into a uint8 file under `RD3_HOME/cache/pixels`, and
read back memory-mapped (a split bigger than the RAM works; the OS keeps the hot pages).

A cache entry is `<key>.u8` (the raw [N, C, r, r] bytes) and `<key>.json` (shape, byte count and a
fingerprint of sampled blocks), both written atomically; a missing, torn or damaged entry is
decoded again, with one warning naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rd3_harness.files import atomic_write
from rd3_harness.hashing import sha256_of
from rd3_harness.progress import progress

if TYPE_CHECKING:
    from rd3_harness.data.real import Split

log = logging.getLogger(__name__)

RESIZE_VERSION = 1
"""Bumped whenever `resize_square` (or the decode) computes different pixels: old entries are
then never read again."""

_BLOCK, _BLOCKS = 1 << 16, 64


def entry_key(split_key: str, resolution: int, test: bool, channels: int) -> str:
    """Cache key of one split at one resolution and preprocessing (train or test resize)."""
    return sha256_of(
        {"split": split_key, "resolution": resolution, "test": test, "channels": channels, "resize": RESIZE_VERSION}
    )


def fingerprint(path: Path, size: int) -> str:
    """A cheap checksum: blake2b of the size and of up to 64 evenly spaced 64 KiB blocks (the whole
    file when it is under 4 MiB). Catches truncation and torn writes without reading 100 GB."""
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        if size <= _BLOCK * _BLOCKS:
            h.update(f.read())
        else:
            for k in range(_BLOCKS):
                f.seek((size - _BLOCK) * k // (_BLOCKS - 1))
                h.update(f.read(_BLOCK))
    return h.hexdigest()


class _Items(torch.utils.data.Dataset):
    """Items of a split at the cache's resolution, for the DataLoader workers."""

    def __init__(self, split: Split, resolution: int, test: bool):
        self.split, self.resolution, self.test = split, resolution, test

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.split.item(i, self.resolution, test=self.test)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder per entry across processes (torchrun ranks, parallel runs); the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _problem(data: Path, header: Path, shape: list[int]) -> str | None:
    """Why an entry cannot be used (None: it can)."""
    try:
        info = json.loads(header.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return "its header is missing or unreadable"
    size = data.stat().st_size
    if not isinstance(info, dict) or info.get("shape") != shape or info.get("bytes") != size:
        return f"{size} bytes where the header says {info.get('bytes') if isinstance(info, dict) else '?'}"
    if info.get("fingerprint") != fingerprint(data, size):
        return "its checksum does not match"
    return None


def _build(split: Split, resolution: int, test: bool, data: Path, header: Path, workers: int, what: str) -> None:
    n, c = len(split), split.channels
    item_bytes = c * resolution * resolution
    batch = max(1, min(512, (16 << 20) // item_bytes))
    loader = torch.utils.data.DataLoader(
        _Items(split, resolution, test),
        batch_size=batch,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    started = time.perf_counter()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f, progress(n, f"decode {what}") as bar:
            for x in loader:
                f.write(x.contiguous().numpy().tobytes())
                bar.advance(len(x))

    atomic_write(data, write)
    size = data.stat().st_size
    if size != n * item_bytes:
        raise RuntimeError(f"{data}: wrote {size} bytes, expected {n * item_bytes}")
    record: dict[str, Any] = {
        "shape": [n, c, resolution, resolution],
        "dtype": "uint8",
        "bytes": size,
        "fingerprint": fingerprint(data, size),
        "split": split.cache_key,
        "resolution": resolution,
        "test": test,
        "resize": RESIZE_VERSION,
        "workers": workers,
        "build_s": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write(header, lambda p: p.write_text(json.dumps(record, indent=2)))


def cached_pixels(
    split: Split, resolution: int, *, test: bool, folder: Path, workers: int, what: str = "images"
) -> torch.Tensor:
    """All items of `split` resized to `resolution` (uint8 [N, C, r, r], memory-mapped on the CPU),
    decoded now with `workers` DataLoader workers unless a valid cache entry exists."""
    key = entry_key(split.cache_key, resolution, test, split.channels)
    data, header = folder / f"{key}.u8", folder / f"{key}.json"
    shape = [len(split), split.channels, resolution, resolution]
    with _locked(folder / f".{key}.lock"):
        problem = _problem(data, header, shape) if data.is_file() else "missing"
        if problem is not None:
            if problem != "missing":
                log.warning("pixel cache %s is truncated or damaged (%s); decoding it again", data, problem)
            _build(split, resolution, test, data, header, workers, what)
    count = shape[0] * shape[1] * shape[2] * shape[3]
    if count == 0:
        return torch.empty(shape, dtype=torch.uint8)
    return torch.from_file(str(data), shared=False, size=count, dtype=torch.uint8).view(shape)
