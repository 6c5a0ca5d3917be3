"""Real data: dataset splits as pixels, and `RealData`, the view plugins and the engine use."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from rd3_harness.data.cache import cached_pixels
from rd3_harness.data.readers import decode_image
from rd3_harness.errors import UsageError


def resize_square(images: torch.Tensor, resolution: int, *, test: bool = False) -> torch.Tensor:
    """Resize uint8 or float [N, C, H, W] to `resolution` square: shorter side, then center crop.

    Test images are resized to resolution * 8/7 first (the ImageNet convention) when they are
    larger than the target; images already at the resolution are returned unchanged.
    """
    h, w = images.shape[-2:]
    if h == w == resolution:
        return images
    short = round(resolution * 8 / 7) if test and min(h, w) > resolution else resolution
    scale = short / min(h, w)
    size = (max(short, round(h * scale)), max(short, round(w * scale)))
    dtype = images.dtype
    x = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    x = x[..., top : top + resolution, left : left + resolution]
    return x.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else x


class Split:
    """One split of a dataset: labels, and pixels on request (uint8 [n, C, r, r])."""

    labels: torch.Tensor
    channels: int

    def __len__(self) -> int:
        return len(self.labels)

    def pixels(self, indices: torch.Tensor, resolution: int, *, test: bool = False) -> torch.Tensor:
        return torch.stack([self.item(i, resolution, test=test) for i in indices.tolist()])

    def decode(self, i: int) -> torch.Tensor:
        """Item `i` at its stored size: uint8 [C, H, W] (folder and shard splits)."""
        raise NotImplementedError

    def item(self, i: int, resolution: int, *, test: bool = False) -> torch.Tensor:
        """Item `i` decoded and resized to `resolution` (uint8 [C, r, r]): what the pixel cache stores."""
        return resize_square(self.decode(i)[None], resolution, test=test)[0]

    def subset(self, indices: torch.Tensor) -> Split:
        """The items at `indices`, as a split of the same kind."""
        raise NotImplementedError

    @property
    def cache_key(self) -> str | None:
        """Identity of the items (files, sizes, labels) for the pixel cache; None: never cached."""
        return None

    @property
    def resident(self) -> bool:
        """True when the whole split is one tensor in memory (cheap to index)."""
        return False


class TensorSplit(Split):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("TensorSplit expects uint8 [N, C, H, W] images")
        if len(images) != len(labels):
            raise UsageError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.channels = images, labels.long(), images.shape[1]

    @property
    def resident(self) -> bool:
        return True

    def pixels(self, indices: torch.Tensor, resolution: int, *, test: bool = False) -> torch.Tensor:
        return resize_square(self.images[indices], resolution, test=test)

    def decode(self, i: int) -> torch.Tensor:
        return self.images[i]

    def subset(self, indices: torch.Tensor) -> Split:
        return TensorSplit(self.images[indices], self.labels[indices])


class FolderSplit(Split):
    """Image files decoded on access (PIL), resized to the requested resolution.

    `key` identifies the files for the pixel cache (the file index's digest, which covers sizes
    and modification times); without one it is computed from the paths and labels.
    """

    def __init__(self, files: list[Path], labels: list[int], channels: int, key: str | None = None):
        self.files, self.labels, self.channels = files, torch.tensor(labels, dtype=torch.int64), channels
        self._key = key

    def decode(self, i: int) -> torch.Tensor:
        return decode_image(self.files[i], self.channels)

    def subset(self, indices: torch.Tensor) -> Split:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return FolderSplit([self.files[i] for i in indices.tolist()], self.labels[indices].tolist(), self.channels)

    @property
    def cache_key(self) -> str | None:
        if self._key is None:
            h = hashlib.sha256(f"folder:{self.channels}".encode())
            for path, label in zip(self.files, self.labels.tolist()):
                h.update(f"\n{path}\t{label}".encode())
            self._key = h.hexdigest()
        return self._key


class _FolderItems(torch.utils.data.Dataset):
    def __init__(self, split: Split, resolution: int, test: bool):
        self.split, self.resolution, self.test = split, resolution, test

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.split.item(i, self.resolution, test=self.test), int(self.split.labels[i])


def _fits_device(nbytes: int, device: torch.device) -> bool:
    """Whether a cached split is copied onto `device`: CUDA, within a quarter of its free memory.
    On the CPU the memory-mapped file is the copy (the OS page cache keeps it in RAM)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 4


class RealData:
    """A real split at model resolution, normalized, on a device.

    Resident splits are resized once and kept as uint8 on the device. Folder and shard splits are
    read from the pixel cache (`rd3_harness.data.cache`) in `cache` when one is given: decoded
    once by `workers` parallel workers on first access to the pixels, then memory-mapped (and
    copied onto a CUDA device when it fits); with `cache=None` they are decoded on access. This is
    `ctx.real_data` for plugins and the data source of the engine.
    """

    def __init__(
        self,
        split: Split,
        *,
        num_classes: int,
        resolution: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device | str = "cpu",
        test: bool = False,
        workers: int = 0,
        cache: Path | None = None,
    ):
        if split.channels != len(mean):
            raise UsageError(f"the data has {split.channels} channel(s) but the normalization has {len(mean)} values")
        self.split, self.num_classes, self.resolution = split, num_classes, resolution
        self.device, self.test, self.workers, self.cache = torch.device(device), test, workers, cache
        self.labels = split.labels
        self._mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self._pixels: torch.Tensor | None = None
        self._base: tuple[RealData, torch.Tensor] | None = None  # a subset served by its parent's cache
        if split.resident:
            self._pixels = split.pixels(torch.arange(len(split)), resolution, test=test).to(self.device)
        order = torch.argsort(self.labels, stable=True)
        counts = torch.bincount(self.labels, minlength=num_classes)
        if len(counts) > num_classes:
            raise UsageError(f"labels go up to {len(counts) - 1} but the dataset has {num_classes} classes")
        self._by_class = torch.split(order, counts.tolist())

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def cached(self) -> bool:
        """Whether the pixels come from the decoded cache (folder or shard split, cache enabled)."""
        return self._base is not None or (
            self.cache is not None and not self.split.resident and self.split.cache_key is not None
        )

    def _store(self) -> torch.Tensor | None:
        """The whole split's uint8 pixels (on the device, or memory-mapped); None when decoded on access."""
        if self._pixels is None and self._base is None and self.cached:
            what = f"{'test' if self.test else 'train'} split at {self.resolution} px"
            px = cached_pixels(
                self.split, self.resolution, test=self.test, folder=self.cache, workers=self.workers, what=what
            )
            self._pixels = px.to(self.device) if _fits_device(px.numel(), self.device) else px
        return self._pixels

    def subset(self, indices: torch.Tensor) -> RealData:
        """A view of some images of this split (same resolution, normalization and device)."""
        indices = torch.as_tensor(indices, dtype=torch.int64).cpu()
        if self.split.resident:
            split: Split = TensorSplit(self._pixels[indices.to(self.device)].cpu(), self.labels[indices])
        else:
            split = self.split.subset(indices)
        view = RealData(
            split,
            num_classes=self.num_classes,
            resolution=self.resolution,
            mean=(0.0,) * self.split.channels,
            std=(1.0,) * self.split.channels,
            device=self.device,
            test=self.test,
            workers=self.workers,
            cache=self.cache,
        )
        view._mean, view._std = self._mean, self._std
        if self.cached:
            view._base = (self, indices) if self._base is None else (self._base[0], self._base[1][indices])
        return view

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.split.channels, self.resolution, self.resolution)

    def class_indices(self, c: int) -> torch.Tensor:
        """Indices (into this split) of the images of class `c`, ascending."""
        return self._by_class[c]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] to model-input space."""
        return (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model-input space back to pixels in [0, 1] (not clamped)."""
        return x * self._std.to(x.dtype) + self._mean.to(x.dtype)

    def raw(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 pixels [n, C, r, r] on the device."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        if self._base is not None:
            parent, rows = self._base
            return parent.raw(rows[indices.cpu()]).to(self.device)
        px = self._store()
        if px is None:
            return self.split.pixels(indices.cpu(), self.resolution, test=self.test).to(self.device)
        return px[indices.to(px.device)].to(self.device, non_blocking=True)

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Normalized float images [n, C, r, r] on the device."""
        return self.normalize(self.raw(indices).float() / 255)

    def sample(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` distinct random images of class `c` (normalized), drawn with `generator`."""
        return self.get(self.sample_indices(c, n, generator))

    def sample_indices(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        pool = self.class_indices(c)
        if n > len(pool):
            raise UsageError(f"class {c} has {len(pool)} images; {n} were asked for")
        return pool[torch.randperm(len(pool), generator=generator)[:n]]

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(normalized images, labels) on the device; shuffled when a generator is given."""
        n = len(self)
        if self._base is not None or self._store() is not None:
            order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                yield self.get(idx), self.labels[idx].to(self.device)
            return
        loader = torch.utils.data.DataLoader(
            _FolderItems(self.split, self.resolution, self.test),
            batch_size=batch_size,
            shuffle=generator is not None,
            generator=generator,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            yield self.normalize(x.float() / 255), y.to(self.device, non_blocking=True)
