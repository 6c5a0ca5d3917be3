"""Batched augmentation on the device with per-sample random parameters.

Parameters are drawn on the CPU from a `torch.Generator` (so a seed gives the same augmentation
on every device) and applied to whole batches at once: one `grid_sample` for random-resized crop
and flip, index gathers for shuffle-patches and random crop, slicing for CutMix. Drawing and
applying are separate so FKD-style replay can store parameters and apply them later.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rd3_harness.protocol.schema import Augmentation


def uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _gamma(alpha: float, generator: torch.Generator) -> float:
    """Gamma(alpha, 1) by Marsaglia-Tsang, driven by `generator` (torch has no seeded Beta)."""
    if alpha < 1:
        u = float(torch.rand(1, generator=generator, dtype=torch.float64))
        return _gamma(alpha + 1, generator) * u ** (1 / alpha)
    d = alpha - 1 / 3
    c = 1 / math.sqrt(9 * d)
    while True:
        x = float(torch.randn(1, generator=generator, dtype=torch.float64))
        v = (1 + c * x) ** 3
        if v <= 0:
            continue
        u = float(torch.rand(1, generator=generator, dtype=torch.float64))
        if math.log(max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v


def beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha)."""
    if alpha == 1.0:
        return float(torch.rand(1, generator=generator, dtype=torch.float64))
    a, b = _gamma(alpha, generator), _gamma(alpha, generator)
    return a / (a + b)


def resized_crop_boxes(
    n: int,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> torch.Tensor:
    """torchvision RandomResizedCrop boxes for n square images: [n, 4] = (top, left, h, w) in pixels."""
    area = size * size
    target = area * uniform(n * attempts, scale[0], scale[1], generator).view(n, attempts)
    log_r = uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), generator).view(n, attempts)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (h > 0) & (w <= size) & (h <= size)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    boxes = torch.empty(n, 4, dtype=torch.float64)
    rows = torch.arange(n)
    hh, ww = h[rows, first.clamp(min=0)], w[rows, first.clamp(min=0)]
    boxes[:, 0] = torch.floor(u[:, 0] * (size - hh + 1))
    boxes[:, 1] = torch.floor(u[:, 1] * (size - ww + 1))
    boxes[:, 2], boxes[:, 3] = hh, ww
    # torchvision's fallback: a centred crop with the ratio clamped into range
    fallback = first < 0
    if fallback.any():
        in_ratio = 1.0
        if in_ratio < ratio[0]:
            fw, fh = size, round(size / ratio[0])
        elif in_ratio > ratio[1]:
            fh, fw = size, round(size * ratio[1])
        else:
            fw = fh = size
        boxes[fallback] = torch.tensor([(size - fh) // 2, (size - fw) // 2, fh, fw], dtype=torch.float64)
    return boxes


@dataclass
class AugmentParams:
    """Random draws for one batch (drawn on the CPU; `to` moves them to the device)."""

    shuffle_w: torch.Tensor | None = None  # [n, factor] strip order along width
    shuffle_h: torch.Tensor | None = None
    boxes: torch.Tensor | None = None  # [n, 4] crop boxes
    shifts: torch.Tensor | None = None  # [n, 2] random-crop offsets in the padded image
    flips: torch.Tensor | None = None  # [n] bool
    mix_kind: str = "none"
    mix_lam: float = 1.0
    mix_perm: torch.Tensor | None = None
    mix_box: tuple[int, int, int, int] | None = None  # (y1, y2, x1, x2)

    def to(self, device: torch.device) -> AugmentParams:
        """A copy on `device`; on CUDA through pinned memory without blocking the host."""
        moved = {}
        for name in ("shuffle_w", "shuffle_h", "boxes", "shifts", "flips", "mix_perm"):
            value = getattr(self, name)
            moved[name] = None if value is None else to_device(value, device)
        return dataclasses.replace(self, **moved)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor to device; CUDA copies go through pinned memory and do not block the host."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class Augmenter:
    """Draw and apply one protocol's augmentation on square images of a given resolution."""

    def __init__(self, spec: Augmentation, resolution: int, fill: torch.Tensor | None = None):
        self.spec, self.size = spec, resolution
        self.fill = fill  # per-channel value of a black pixel in model-input space (padding)

    def draw(self, n: int, generator: torch.Generator) -> AugmentParams:
        s, p = self.spec, AugmentParams()
        if s.shuffle_patches is not None:
            f = s.shuffle_patches.factor
            p.shuffle_w = torch.argsort(torch.rand(n, f, generator=generator), dim=1)
            p.shuffle_h = torch.argsort(torch.rand(n, f, generator=generator), dim=1)
        if s.random_resized_crop is not None:
            rrc = s.random_resized_crop
            p.boxes = resized_crop_boxes(n, self.size, rrc.scale, rrc.ratio, generator)
        if s.random_crop is not None:
            pad = s.random_crop.padding
            p.shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
        if s.horizontal_flip:
            p.flips = torch.rand(n, generator=generator) < 0.5
        mix = s.mix
        if mix.kind != "none" and float(torch.rand(1, generator=generator)) < mix.prob:
            lam = beta(mix.alpha, generator)
            p.mix_kind, p.mix_perm = mix.kind, torch.randperm(n, generator=generator)
            if mix.kind == "cutmix":
                p.mix_box, lam = self._cut_box(lam, generator)
            p.mix_lam = lam
        return p

    def _cut_box(self, lam: float, generator: torch.Generator) -> tuple[tuple[int, int, int, int], float]:
        size = self.size
        cut = int(size * math.sqrt(1.0 - lam))
        cy, cx = (int(v) for v in torch.randint(0, size, (2,), generator=generator))
        y1, y2 = max(cy - cut // 2, 0), min(cy + cut // 2, size)
        x1, x2 = max(cx - cut // 2, 0), min(cx + cut // 2, size)
        return (y1, y2, x1, x2), 1.0 - (y2 - y1) * (x2 - x1) / (size * size)

    def apply(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """Augment a batch [n, C, H, W] (model-input space); mixing is left to `mix`."""
        if p.shuffle_w is not None:
            x = _shuffle_strips(x, p.shuffle_w, dim=3)
            x = _shuffle_strips(x, p.shuffle_h, dim=2)
        flips = p.flips
        if p.boxes is not None:
            x = _crop_resize(x, p.boxes, flips)
            flips = None
        if p.shifts is not None:
            x = _pad_crop(x, p.shifts, self.spec.random_crop.padding, self.fill)
        if flips is not None:
            x = torch.where(flips.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
        return x

    @staticmethod
    def mix(x: torch.Tensor, p: AugmentParams, inplace: bool = False) -> torch.Tensor:
        """Apply the batch's CutMix or MixUp; `inplace` overwrites `x` (when the caller owns it)."""
        if p.mix_kind == "none":
            return x
        perm = p.mix_perm.to(x.device)
        if p.mix_kind == "mixup":
            return p.mix_lam * x + (1 - p.mix_lam) * x[perm]
        y1, y2, x1, x2 = p.mix_box
        out = x if inplace else x.clone()
        out[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, AugmentParams]:
        p = self.draw(len(x), generator)
        return self.mix(self.apply(x, p), p, inplace=True), p


def _strip_index(order: torch.Tensor, length: int) -> torch.Tensor:
    """Per-sample source index along one axis after permuting `factor` strips (last takes the rest)."""
    n, f = order.shape
    width = length // f
    sizes = torch.full((f,), width, device=order.device)
    sizes[-1] = length - width * (f - 1)
    starts = torch.cumsum(sizes, 0) - sizes
    out_sizes = sizes[order]  # [n, f] strip sizes in output order
    out_ends = torch.cumsum(out_sizes, 1)
    pos = torch.arange(length, device=order.device).expand(n, length).contiguous()
    slot = torch.searchsorted(out_ends, pos, right=True)  # output slot of each position
    offset = pos - (out_ends - out_sizes).gather(1, slot)
    return starts[order.gather(1, slot)] + offset


def _shuffle_strips(x: torch.Tensor, order: torch.Tensor, dim: int) -> torch.Tensor:
    index = _strip_index(order.to(x.device), x.shape[dim])
    shape = [x.shape[0], 1, 1, 1]
    shape[dim] = x.shape[dim]
    return x.gather(dim, index.view(shape).expand_as(x))


def _crop_resize(x: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
    """Crop each box and resize it back to full size (bilinear, half-pixel centres), flipping where
    asked, in one `grid_sample`: torchvision's crop-then-resize without antialiasing (crops only
    upsample here). Sample coordinates are clamped to the box's pixel centres, so the outermost
    samples repeat the box's border pixels instead of blending in pixels outside the box. The
    sampling grid of an axis-aligned box is separable: built from per-row and per-column coordinates."""
    n, _, h, w = x.shape
    top, left, bh, bw = boxes.to(x.device, torch.float32).unbind(1)
    gx, gy = _box_axis(left, bw, w), _box_axis(top, bh, h)  # [n, w], [n, h]
    if flips is not None:
        gx = torch.where(flips.to(x.device).view(-1, 1), gx.flip(1), gx)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def _box_axis(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """Normalized grid coordinates [n, size] of `size` outputs resampling [start, start + length)
    along one axis: source pixel (j + 0.5) * length / size - 0.5 within the box, clamped to
    [0, length - 1] as a resize of the cropped image clamps it."""
    j = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5
    src = (j * (length / size)[:, None] - 0.5).clamp(min=0)
    src = torch.minimum(src, (length - 1)[:, None]) + start[:, None]
    return (2 * src + 1) / size - 1


def _pad_crop(x: torch.Tensor, shifts: torch.Tensor, pad: int, fill: torch.Tensor | None) -> torch.Tensor:
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    if fill is not None:
        border = torch.ones(1, 1, h, w, device=x.device, dtype=x.dtype)
        border = F.pad(border, (pad, pad, pad, pad)) == 0
        padded = torch.where(border, fill.to(x.device, x.dtype).view(1, c, 1, 1), padded)
    shifts = shifts.to(x.device)
    rows = (shifts[:, 0:1] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    padded = padded.gather(2, rows)
    cols = (shifts[:, 1:2] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(3, cols)
