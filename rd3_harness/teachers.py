"""Teachers: trained by the core with the protocol's recipe and cached, or loaded from a file or
from torchvision weights in the local cache, always with a checksum."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rd3_harness.data.real import RealData, Split, resize_square
from rd3_harness.errors import DataMissing, UsageError
from rd3_harness.files import atomic_write, file_sha256
from rd3_harness.hashing import sha256_of
from rd3_harness.models import create_model
from rd3_harness.progress import progress
from rd3_harness.protocol.schema import (
    Dataset,
    FileTeacher,
    Protocol,
    RandomResizedCrop,
    TeacherRecipe,
    TorchvisionTeacher,
    TrainedTeacher,
)
from rd3_harness.registry import ModelEntry
from rd3_harness.seeding import derive_seed, generator
from rd3_harness.settings import Settings
from rd3_harness.training.augment import Augmenter
from rd3_harness.training.labels import hard_targets
from rd3_harness.training.losses import hard_ce
from rd3_harness.training.optim import Scheduler, build_optimizer
from rd3_harness.training.trainer import accuracy, wants_channels_last

log = logging.getLogger(__name__)


@dataclass
class LoadedTeacher:
    spec: TrainedTeacher | FileTeacher | TorchvisionTeacher
    model: nn.Module
    sha256: str
    """Checksum of the weights file."""
    path: Path
    test_top1: float | None
    train_wall_s: float
    """Seconds spent training it in this process (0 when it came from the cache)."""

    def as_record(self) -> dict[str, Any]:
        return {
            "architecture": self.spec.architecture,
            "kind": self.spec.kind,
            "sha256": self.sha256,
            "path": str(self.path),
            "test_top1": self.test_top1,
            "train_wall_s": self.train_wall_s,
        }


def teacher_key(spec: TrainedTeacher, dataset: Dataset) -> str:
    """Cache key of a trained teacher: its spec and the dataset view it was trained on."""
    return sha256_of({"teacher": spec.model_dump(mode="json"), "dataset": dataset.model_dump(mode="json")})


def cache_paths(spec: TrainedTeacher, dataset: Dataset, settings: Settings) -> tuple[Path, Path]:
    stem = settings.home / "teachers" / dataset.name / f"{spec.architecture}-{teacher_key(spec, dataset)[:16]}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _build(
    models: Mapping[str, ModelEntry], spec, dataset: Dataset, channels: int, num_classes: int, device: torch.device
) -> nn.Module:
    torch.manual_seed(derive_seed("teacher-init", getattr(getattr(spec, "recipe", None), "seed", 0)))
    return create_model(
        models, spec.architecture, num_classes=num_classes, in_channels=channels, resolution=dataset.resolution
    ).to(device)


def crop_box(
    h: int, w: int, spec: RandomResizedCrop, g: torch.Generator, attempts: int = 10
) -> tuple[int, int, int, int]:
    """A random-resized-crop box (top, left, height, width) of an h x w image, as torchvision's
    `RandomResizedCrop.get_params` draws it (10 tries, then a centre crop with the ratio clamped)."""
    area = h * w
    log_lo, log_hi = math.log(spec.ratio[0]), math.log(spec.ratio[1])
    for _ in range(attempts):
        target = area * (spec.scale[0] + (spec.scale[1] - spec.scale[0]) * float(torch.rand(1, generator=g)))
        aspect = math.exp(log_lo + (log_hi - log_lo) * float(torch.rand(1, generator=g)))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    ratio = w / h
    if ratio < spec.ratio[0]:
        cw, ch = w, round(w / spec.ratio[0])
    elif ratio > spec.ratio[1]:
        ch, cw = h, round(h * spec.ratio[1])
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class _FullImageCrops(torch.utils.data.Dataset):
    """Training items of a folder or shard split for one teacher epoch: the full decoded image,
    random-resized-cropped to the protocol resolution (or resized, without a crop in the recipe)
    and flipped, each draw seeded by (recipe seed, epoch, item) so workers do not matter."""

    def __init__(self, split: Split, resolution: int, recipe: TeacherRecipe, epoch: int):
        self.split, self.resolution, self.recipe, self.epoch = split, resolution, recipe, epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        aug, r = self.recipe.augmentation, self.resolution
        g = generator("teacher-crop", self.recipe.seed, self.epoch, i)
        image = self.split.decode(i)
        if aug.random_resized_crop is None:
            x = resize_square(image[None], r)[0]
        else:
            top, left, h, w = crop_box(image.shape[1], image.shape[2], aug.random_resized_crop, g)
            crop = image[None, :, top : top + h, left : left + w].float()
            x = F.interpolate(crop, size=(r, r), mode="bilinear", antialias=True, align_corners=False)[0]
            x = x.round().clamp(0, 255).to(torch.uint8)
        if aug.horizontal_flip and float(torch.rand(1, generator=g)) < 0.5:
            x = x.flip(2)
        return x, int(self.split.labels[i])


def full_image_batches(
    train: RealData, recipe: TeacherRecipe, epoch: int, g: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One teacher epoch over a folder or shard split, read at full size by `train.workers`
    DataLoader workers: (normalized images, labels) on the device, in an order drawn from `g`."""
    loader = torch.utils.data.DataLoader(
        _FullImageCrops(train.split, train.resolution, recipe, epoch),
        batch_size=recipe.batch_size,
        sampler=torch.randperm(len(train), generator=g).tolist(),
        num_workers=train.workers,
        pin_memory=train.device.type == "cuda",
    )
    for x, y in loader:
        x = x.to(train.device, non_blocking=True)
        yield train.normalize(x.float() / 255), y.to(train.device, non_blocking=True)


def train_teacher(
    models: Mapping[str, ModelEntry],
    spec: TrainedTeacher,
    dataset: Dataset,
    train: RealData,
    test: RealData,
    device: torch.device,
    channels_last: bool | None = None,
) -> tuple[nn.Module, float, float]:
    """Train with the recipe; returns (model, test top-1, wall seconds).

    Resident datasets (MNIST, CIFAR) are augmented in batches at the protocol resolution. Folder
    and shard datasets follow torchvision's reference ImageNet recipe: the random-resized crop and
    the flip are taken from the full image in parallel workers (`full_image_batches`); the rest of
    the augmentation (random crop, shuffle-patches, mixing) is applied to the batch."""
    recipe = spec.recipe
    if recipe.images_per_class is not None:
        g = generator("teacher-subset", recipe.seed)
        per_class = [
            train.sample_indices(c, min(recipe.images_per_class, len(train.class_indices(c))), g)
            for c in range(train.num_classes)
        ]
        train = train.subset(torch.cat(per_class))
    model = _build(models, spec, dataset, train.image_shape[0], train.num_classes, device)
    cl = wants_channels_last(model, device, channels_last)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(recipe.optimizer, model)
    steps = math.ceil(len(train) / recipe.batch_size)
    scheduler = Scheduler(optimizer, recipe.schedule, recipe.epochs, steps)
    fill = train.normalize(torch.zeros(1, train.image_shape[0], 1, 1, device=device)).flatten()
    full_images = not train.split.resident
    batch_aug = recipe.augmentation
    if full_images:
        batch_aug = batch_aug.model_copy(update={"random_resized_crop": None, "horizontal_flip": False})
    augmenter = Augmenter(batch_aug, dataset.resolution, fill=fill)
    started = time.perf_counter()
    model.train()
    with progress(recipe.epochs * steps, f"train teacher {spec.architecture}") as bar:
        for epoch in range(recipe.epochs):
            g = generator("teacher-batches", recipe.seed, epoch)
            batches = (
                full_image_batches(train, recipe, epoch, g) if full_images else train.batches(recipe.batch_size, g)
            )
            for step, (x, y) in enumerate(batches):
                scheduler.set(epoch, step)
                p = augmenter.draw(len(x), g).to(device)
                x = augmenter.mix(augmenter.apply(x, p), p, inplace=True)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.precision == "bf16"):
                    out = model(x)
                loss = hard_ce(out.float(), hard_targets(y, p))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.advance(**({"epoch": epoch + 1, "loss": loss.item()} if step % 50 == 0 else {}))
    wall = time.perf_counter() - started
    top1, _ = accuracy(model, test, channels_last=cl)
    return model.eval(), top1, wall


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise UsageError(f"{path}: expected a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _into(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> nn.Module:
    target = model.model if hasattr(model, "model") and not any(k.startswith("model.") for k in state) else model
    try:
        target.load_state_dict(state)
    except RuntimeError as exc:
        raise UsageError(f"{source}: weights do not fit the architecture: {str(exc).splitlines()[0]}") from None
    return model


def protocol_teachers(protocol: Protocol) -> list:
    """Every teacher a protocol names (evaluation, synthesis, label teachers), each once, in order."""
    specs = [
        protocol.teacher,
        *protocol.synthesis_teachers,
        *(getattr(protocol.evaluation.labels, "teachers", None) or ()),
    ]
    unique: dict[str, Any] = {}
    for spec in specs:
        unique.setdefault(sha256_of(spec.model_dump(mode="json")), spec)
    return list(unique.values())


def get_teacher(
    models: Mapping[str, ModelEntry],
    spec,
    dataset: Dataset,
    settings: Settings,
    train: RealData | None,
    test: RealData,
    *,
    retrain: bool = False,
) -> LoadedTeacher:
    """The teacher of a spec on a dataset: from the cache, trained now, or loaded and verified."""
    device = settings.torch_device
    channels, num_classes = test.image_shape[0], test.num_classes
    if isinstance(spec, TrainedTeacher):
        weights, meta = cache_paths(spec, dataset, settings)
        if weights.is_file() and meta.is_file() and not retrain:
            info = _read_meta(meta)
            digest = file_sha256(weights)
            if digest == info.get("sha256"):
                model = _into(
                    _build(models, spec, dataset, channels, num_classes, device), load_file(str(weights)), weights
                )
                return LoadedTeacher(spec, model.eval(), digest, weights, info.get("test_top1"), 0.0)
            log.warning("cached teacher %s is truncated or damaged (sha256 mismatch); training it again", weights)
        if train is None:
            raise UsageError("training a teacher needs the real training set")
        model, top1, wall = train_teacher(models, spec, dataset, train, test, device, settings.channels_last)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        atomic_write(weights, lambda p: save_file(state, str(p)))
        digest = file_sha256(weights)
        record = {
            "spec": spec.model_dump(mode="json"),
            "dataset": dataset.model_dump(mode="json"),
            "sha256": digest,
            "test_top1": top1,
            "train_wall_s": wall,
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write(meta, lambda p: p.write_text(json.dumps(record, indent=2)))
        return LoadedTeacher(spec, model.to(memory_format=torch.contiguous_format).eval(), digest, weights, top1, wall)
    if isinstance(spec, FileTeacher):
        path = _find_file(spec.filename, settings)
        digest = file_sha256(path)
        if digest != spec.sha256:
            raise UsageError(f"{path}: sha256 {digest} does not match the protocol's {spec.sha256}: refused")
        model = _into(_build(models, spec, dataset, channels, num_classes, device), _load_state(path), path)
        return LoadedTeacher(spec, model.eval(), digest, path, None, 0.0)
    return _torchvision_teacher(models, spec, dataset, channels, num_classes, device)


def _read_meta(path: Path) -> dict[str, Any]:
    """A cached teacher's record; a torn or damaged one reads as empty (so the teacher is trained again)."""
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def _find_file(name: str, settings: Settings) -> Path:
    folders = [Path(p) for p in os.environ.get("RD3_TEACHER_DIR", "").split(os.pathsep) if p]
    folders += [settings.home / "teachers" / "files", Path.cwd()]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    looked = ", ".join(str(f) for f in folders)
    raise DataMissing(
        f"teacher file {name!r} not found (looked in {looked}); put it in one of them or set RD3_TEACHER_DIR"
    )


def _torchvision_teacher(
    models: Mapping[str, ModelEntry],
    spec: TorchvisionTeacher,
    dataset: Dataset,
    channels: int,
    num_classes: int,
    device: torch.device,
) -> LoadedTeacher:
    import torchvision

    try:
        weights = torchvision.models.get_weight(
            f"{torchvision.models.get_model_weights(spec.architecture).__name__}.{spec.weights}"
        )
    except (ValueError, KeyError, AttributeError) as exc:
        raise UsageError(f"no torchvision weights {spec.weights!r} for {spec.architecture}: {exc}") from None
    classes = len(weights.meta.get("categories", []))
    if classes != num_classes or channels != 3:
        raise UsageError(
            f"{spec.architecture}.{spec.weights} predicts {classes} classes from RGB; "
            f"{dataset.name} has {num_classes} classes and {channels} channel(s)"
        )
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise DataMissing(
            f"torchvision weights {spec.architecture}.{spec.weights} are not in the local cache; "
            f"download {weights.url} to {path} (nothing is downloaded at run time)"
        )
    model = create_model(
        models, spec.architecture, num_classes=num_classes, in_channels=3, resolution=dataset.resolution
    )
    model = _into(model, _load_state(path), path).to(device)
    return LoadedTeacher(spec, model.eval(), file_sha256(path), path, None, 0.0)
