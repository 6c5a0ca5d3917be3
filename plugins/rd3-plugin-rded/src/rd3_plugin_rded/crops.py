"""RDED's three steps: cut random square crops of real images, keep the ones the observer finds
most typical of their class (lowest cross-entropy), and stitch them into `factor x factor` grids."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rd3_harness import RealData, resized_crop_boxes

SCORE_BATCH = 1024


def crop(images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Cut box i = (top, left, height, width) of image i and resize it to `size`: torchvision's
    crop then resize (bilinear, antialiased), as RDED's `RandomResizedCrop(antialias=True)`. The
    edge samples repeat the box's border pixels; nothing outside the box blends in. Boxes of one
    size are resized together."""
    out = images.new_empty(len(boxes), images.shape[1], *size)
    groups: dict[tuple[int, int], list[int]] = {}
    cuts = [tuple(int(v) for v in b) for b in boxes.tolist()]
    for i, (_, _, h, w) in enumerate(cuts):
        groups.setdefault((h, w), []).append(i)
    for (h, w), idx in groups.items():
        patches = torch.stack([images[i, :, cuts[i][0] : cuts[i][0] + h, cuts[i][1] : cuts[i][1] + w] for i in idx])
        rows = torch.tensor(idx, device=images.device)
        out[rows] = F.interpolate(patches, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out


def pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre `x` on a zero canvas of `size` x `size` (zero in model-input space, as RDED pads)."""
    dh, dw = size - x.shape[-2], size - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


@torch.inference_mode()
def cross_entropy(observer: nn.Module, x: torch.Tensor, label: int, size: int) -> torch.Tensor:
    """-log p(label | crop) for each crop, each zero-padded to the model's resolution."""
    out = []
    for chunk in x.split(SCORE_BATCH):
        logits = observer(pad_to(chunk, size)).float()
        out.append(F.cross_entropy(logits, torch.full((len(chunk),), label, device=x.device), reduction="none"))
    return torch.cat(out)


@dataclass
class Crops:
    """One square crop per source image: split index of the image, box (top, left, h, w) in
    pixels at model resolution, and the observer's cross-entropy (all on the CPU)."""

    index: torch.Tensor
    boxes: torch.Tensor
    ce: torch.Tensor

    def lowest(self, n: int) -> tuple[Crops, Crops]:
        """The `n` crops of lowest cross-entropy (ascending) and the rest."""
        order = torch.argsort(self.ce, stable=True)
        return self._take(order[:n]), self._take(order[n:])

    def _take(self, i: torch.Tensor) -> Crops:
        return Crops(self.index[i], self.boxes[i], self.ce[i])


def best_crops(
    observer: nn.Module,
    real: RealData,
    index: torch.Tensor,
    label: int,
    *,
    crops: int,
    factor: int,
    scale: tuple[float, float],
    generator: torch.Generator,
) -> Crops:
    """For each real image, `crops` random square crops at resolution // factor; keep the one of
    lowest cross-entropy."""
    size = real.resolution
    images = real.get(index)
    boxes = resized_crop_boxes(len(index) * crops, size, scale, (1.0, 1.0), generator)
    source = torch.arange(len(index)).repeat_interleave(crops)
    x = crop(images[source.to(images.device)], boxes, (size // factor,) * 2)
    ce = cross_entropy(observer, x, label, size).cpu().view(len(index), crops)
    best = ce.argmin(1)
    rows = torch.arange(len(index))
    return Crops(index, boxes.view(len(index), crops, 4)[rows, best], ce[rows, best])


def cells(size: int, factor: int) -> list[tuple[int, int]]:
    """(start, length) of each grid cell along one side; the first `size % factor` get one pixel more."""
    base, extra = divmod(size, factor)
    lengths = [base + (i < extra) for i in range(factor)]
    return [(sum(lengths[:i]), n) for i, n in enumerate(lengths)]


def stitch(real: RealData, kept: Crops, ipc: int, factor: int) -> torch.Tensor:
    """`ipc` images from `ipc * factor**2` crops: the k-th chunk of `ipc` crops fills grid cell k
    (row-major), so image j holds crop j of every chunk. Each crop is cut again from its source
    image at the size of its cell."""
    size = real.resolution
    out = torch.zeros(ipc, real.image_shape[0], size, size, device=real.device)
    images = real.get(kept.index)
    k = 0
    for top, h in cells(size, factor):
        for left, w in cells(size, factor):
            chunk = slice(k * ipc, (k + 1) * ipc)
            out[:, :, top : top + h, left : left + w] = crop(images[chunk], kept.boxes[chunk], (h, w))
            k += 1
    return out
