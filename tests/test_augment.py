"""Batched augmentation: parameters follow their specs, ops are exact where they should be."""

from __future__ import annotations

import math

import pytest
import torch

from rd3_harness.protocol.schema import Augmentation, CutMix, MixUp, RandomCrop, RandomResizedCrop, ShufflePatches
from rd3_harness.training.augment import Augmenter, beta, resized_crop_boxes


@pytest.fixture(scope="module")
def images(smoke_workspace):
    return smoke_workspace.train.get(torch.arange(64))


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_resized_crop_boxes_respect_scale_and_ratio():
    boxes = resized_crop_boxes(5000, 28, (0.25, 0.8), (3 / 4, 4 / 3), g())
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 28).all()
    area = h * w / 28**2
    assert area.min() > 0.2 and area.max() < 0.85  # scale range, up to rounding
    assert (w / h).min() > 0.65 and (w / h).max() < 1.55  # ratio range, up to rounding to pixels


def test_flip_and_identity_crop_are_exact(images):
    aug = Augmenter(Augmentation(horizontal_flip=True), 28)
    p = aug.draw(len(images), g())
    out = aug.apply(images, p)
    assert torch.equal(out[p.flips], images[p.flips].flip(3))
    assert torch.equal(out[~p.flips], images[~p.flips])


def test_random_crop_shifts_with_black_padding(images, smoke_workspace):
    fill = smoke_workspace.fill()
    aug = Augmenter(Augmentation(random_crop=RandomCrop(padding=4)), 28, fill=fill)
    p = aug.draw(len(images), g(1))
    out = aug.apply(images, p)
    for i in range(8):
        dy, dx = (p.shifts[i] - 4).tolist()
        src = torch.full((1, 36, 36), float(fill))
        src[:, 4:32, 4:32] = images[i]
        assert torch.equal(out[i], src[:, 4 + dy : 32 + dy, 4 + dx : 32 + dx])


def test_shuffle_patches_permute_strips(images):
    aug = Augmenter(Augmentation(shuffle_patches=ShufflePatches(factor=2)), 28)
    p = aug.draw(len(images), g(2))
    out = aug.apply(images, p)
    for i in range(8):
        cols = [images[i][..., :14], images[i][..., 14:]]
        x = torch.cat([cols[j] for j in p.shuffle_w[i].tolist()], dim=-1)
        rows = [x[..., :14, :], x[..., 14:, :]]
        assert torch.equal(out[i], torch.cat([rows[j] for j in p.shuffle_h[i].tolist()], dim=-2))


def test_cutmix_lambda_is_the_kept_area(images):
    aug = Augmenter(Augmentation(mix=CutMix(alpha=1.0)), 28)
    for seed in range(20):
        p = aug.draw(len(images), g(seed))
        out = aug.mix(images, p)
        y1, y2, x1, x2 = p.mix_box
        assert math.isclose(p.mix_lam, 1 - (y2 - y1) * (x2 - x1) / 784)
        assert torch.equal(out[:, :, y1:y2, x1:x2], images[p.mix_perm][:, :, y1:y2, x1:x2])
        untouched = torch.ones(28, 28, dtype=torch.bool)
        untouched[y1:y2, x1:x2] = False
        assert torch.equal(out[..., untouched], images[..., untouched])


def test_mix_probability_and_mixup(images):
    never = Augmenter(Augmentation(mix=MixUp(prob=0.0)), 28)
    assert never.draw(8, g()).mix_kind == "none"
    mixup = Augmenter(Augmentation(mix=MixUp(alpha=0.8)), 28)
    p = mixup.draw(len(images), g(3))
    assert torch.allclose(mixup.mix(images, p), p.mix_lam * images + (1 - p.mix_lam) * images[p.mix_perm])


def test_beta_sampler_moments():
    gen = g(4)
    draws = torch.tensor([beta(0.8, gen) for _ in range(4000)])
    assert abs(draws.mean().item() - 0.5) < 0.02
    assert abs(draws.var().item() - 0.8 * 0.8 / (1.6**2 * 2.6)) < 0.01  # Beta(a, a) variance


def test_same_generator_same_augmentation(images):
    spec = Augmentation(random_resized_crop=RandomResizedCrop(scale=(0.5, 1)), horizontal_flip=True, mix=CutMix())
    aug = Augmenter(spec, 28)
    a, _ = aug(images, g(9))
    b, _ = aug(images, g(9))
    c, _ = aug(images, g(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_resized_crop_equals_torchvision_crop_then_resize(images):
    """Each box against torchvision's `resized_crop` (bilinear, no antialiasing: crops only upsample
    here), edge pixels included: the box's border pixels are repeated, nothing outside it blends in."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    fixed = [(0, 0, 28, 28), (0, 0, 8, 8), (20, 20, 8, 8), (5, 9, 11, 11), (3, 1, 14, 20), (12, 0, 16, 9)]
    boxes = torch.cat(
        [torch.tensor(fixed, dtype=torch.float64), resized_crop_boxes(58, 28, (0.08, 1), (3 / 4, 4 / 3), g(5))]
    )
    flips = torch.rand(64, generator=g(6)) < 0.5
    aug = Augmenter(Augmentation(random_resized_crop=RandomResizedCrop(scale=(0.08, 1)), horizontal_flip=True), 28)
    p = aug.draw(64, g())
    p.boxes, p.flips = boxes, flips
    out = aug.apply(images, p)
    for i, (top, left, h, w) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(
            images[i], top, left, h, w, [28, 28], interpolation=InterpolationMode.BILINEAR, antialias=False
        )
        ref = ref.flip(-1) if flips[i] else ref
        assert torch.allclose(out[i], ref, atol=1e-5), (i, (top, left, h, w), float((out[i] - ref).abs().max()))
