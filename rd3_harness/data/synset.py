"""Synthetic-set files: `manifest.json` + `images.safetensors` (sha256 in the manifest) + a PNG
grid of a few images per class for people; and import of an ImageFolder of PNG/JPG files made
elsewhere.

Images are stored as uint8 pixels by default (model input denormalized, clamped to [0, 1],
rounded), as the original repositories save PNG/JPEG; the protocol's `evaluation.storage_dtype`
may keep the float32 model-input values instead. Loading a set gives the model-input tensor the
students are trained on, computed the same way every time: the set evaluated after a synthesis
is the one read back from the files, bit for bit."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rd3_harness.contract import SyntheticSet
from rd3_harness.data.folders import check_class_order
from rd3_harness.data.readers import IMAGE_SUFFIXES, decode_image, scan_image_folder
from rd3_harness.errors import UsageError
from rd3_harness.files import atomic_write, file_sha256

log = logging.getLogger(__name__)
FORMAT = "rd3-synset/2"
READABLE = ("rd3-synset/1", FORMAT)
"""Formats `load_synset` reads; format 1 stored float32 model-input images."""
DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
MANIFEST, TENSORS, GRID = "manifest.json", "images.safetensors", "grid.png"
GRID_CLASSES, GRID_PER_CLASS = 100, 10
"""The grid shows at most this many classes (spread evenly over the set's), this many images each."""
CHUNK = 1024
"""Images converted at a time, so no second full-size float copy of a set is made."""


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def _statistics(normalization: Mapping[str, Sequence[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = (torch.tensor(normalization[k], dtype=torch.float32).view(1, -1, 1, 1) for k in ("mean", "std"))
    return mean, std


def to_pixels(images: torch.Tensor, normalization: Mapping[str, Sequence[float]]) -> torch.Tensor:
    """Model-input images to uint8 pixels [N, C, H, W] on the CPU: denormalized, clamped to [0, 1],
    rounded (exact for real images); converted `CHUNK` images at a time."""
    mean, std = _statistics(normalization)
    out = torch.empty(images.shape, dtype=torch.uint8)
    for start in range(0, len(images), CHUNK):
        x = images[start : start + CHUNK].detach().to("cpu", torch.float32)
        out[start : start + CHUNK] = (x * std + mean).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return out


def from_pixels(pixels: torch.Tensor, normalization: Mapping[str, Sequence[float]]) -> torch.Tensor:
    """uint8 pixels to float32 model input, as `RealData.get` computes it: (p / 255 - mean) / std."""
    mean, std = _statistics(normalization)
    return pixels.float().div_(255).sub_(mean).div_(std)


def _stored_images(images: torch.Tensor, dtype: str, normalization) -> torch.Tensor:
    if dtype == "uint8":
        return to_pixels(images, normalization)
    return images.detach().to("cpu", torch.float32).contiguous()


def _model_input(stored: torch.Tensor, normalization) -> torch.Tensor:
    return from_pixels(stored, normalization) if stored.dtype == torch.uint8 else stored


def _normalization(value: Any) -> dict[str, list[float]]:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return {"mean": [float(v) for v in value["mean"]], "std": [float(v) for v in value["std"]]}


def save_synset(
    folder: Path,
    synset: SyntheticSet,
    info: dict[str, Any],
    *,
    normalization: Any,
    dtype: str = "uint8",
) -> tuple[SyntheticSet, dict[str, Any]]:
    """Write the set atomically, its images as `dtype` (`uint8` pixels or `float32` model input)
    under `normalization` (the protocol's mean and std). Returns what `load_synset` would read
    back (the model-input set the students are trained on, on the device of `synset`) and the
    manifest (sha256, storage bytes: the size of the tensor file, what the grid shows)."""
    if dtype not in DTYPES:
        raise UsageError(f"storage dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    folder.mkdir(parents=True, exist_ok=True)
    norm = _normalization(normalization)
    images = _stored_images(synset.images, dtype, norm)
    tensors = {"images": images, "labels": synset.labels.cpu().contiguous()}
    if synset.soft_labels is not None:
        tensors["soft_labels"] = synset.soft_labels.detach().float().cpu().contiguous()
    atomic_write(folder / TENSORS, lambda p: save_file(tensors, str(p)))
    n, c, h, w = images.shape
    shown = save_grid(folder / GRID, images, tensors["labels"], norm)
    manifest = {
        "format": FORMAT,
        **info,
        "count": n,
        "image_shape": [c, h, w],
        "storage_dtype": dtype,
        "normalization": norm,
        "sha256": file_sha256(folder / TENSORS),
        "storage_bytes": (folder / TENSORS).stat().st_size,
        "pixel_bytes": n * c * h * w,
        "soft_labels": synset.soft_labels is not None,
        "grid": shown,
        "meta": {k: _json_safe(v) for k, v in synset.meta.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write(folder / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=2)))
    device = synset.images.device
    stored = SyntheticSet(
        _model_input(images, norm).to(device),
        tensors["labels"].to(device),
        tensors["soft_labels"].to(device) if "soft_labels" in tensors else None,
        manifest["meta"],
    )
    return stored, manifest


def grid_selection(labels: torch.Tensor) -> list[tuple[int, list[int]]]:
    """(class, indices into the set) of what the grid shows: at most `GRID_CLASSES` classes spread
    evenly over those present, the first `GRID_PER_CLASS` images of each."""
    classes = labels.unique(sorted=True).tolist()
    if len(classes) > GRID_CLASSES:
        picks = torch.linspace(0, len(classes) - 1, GRID_CLASSES).round().long().tolist()
        classes = [classes[i] for i in picks]
    return [(c, torch.nonzero(labels == c).flatten()[:GRID_PER_CLASS].tolist()) for c in classes]


def save_grid(path: Path, stored: torch.Tensor, labels: torch.Tensor, normalization) -> dict[str, Any]:
    """One row per shown class (see `grid_selection`), as 8-bit pixels; only the shown images are
    converted. Returns what it shows, for the manifest."""
    import torchvision

    rows = grid_selection(labels)
    chosen = torch.tensor([i for _, idx in rows for i in idx], dtype=torch.int64)
    picked = stored[chosen]
    pixels = picked if picked.dtype == torch.uint8 else to_pixels(picked, normalization)
    per_row = max(len(idx) for _, idx in rows)
    padded, at = [], 0
    for _, idx in rows:
        row = pixels[at : at + len(idx)]
        at += len(idx)
        padded.append(torch.cat([row, row.new_zeros(per_row - len(idx), *row.shape[1:])]))
    grid = torchvision.utils.make_grid(torch.cat(padded), nrow=per_row, padding=1)
    image = Image.fromarray(grid.permute(1, 2, 0).numpy())
    atomic_write(path, lambda p: image.save(p, format="png"))
    return {"file": GRID, "classes": [c for c, _ in rows], "images": [idx for _, idx in rows]}


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{folder}: no {MANIFEST} (not a synthetic set made by rd3h)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in READABLE:
        raise UsageError(f"{path}: unknown format {manifest.get('format') if isinstance(manifest, dict) else None!r}")
    return manifest


def stored_dtype(manifest: dict[str, Any]) -> str:
    """How the set's images are stored (format 1: float32)."""
    return manifest.get("storage_dtype", "float32")


def load_synset(folder: Path) -> tuple[SyntheticSet, dict[str, Any]]:
    """Read a saved set as model input; the tensor file must match the manifest's sha256."""
    manifest = read_manifest(folder)
    path = folder / TENSORS
    if not path.is_file():
        raise UsageError(f"{folder}: {TENSORS} is missing")
    digest = file_sha256(path)
    if digest != manifest.get("sha256"):
        raise UsageError(f"{path}: sha256 {digest} does not match the manifest's {manifest.get('sha256')}: refused")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"{path}: unreadable ({exc})") from None
    if "images" not in tensors or "labels" not in tensors:
        raise UsageError(f"{path}: needs 'images' and 'labels' tensors")
    images, dtype = tensors["images"], stored_dtype(manifest)
    if images.dtype != DTYPES.get(dtype) or images.ndim != 4:
        raise UsageError(
            f"{path}: images are {images.dtype} {list(images.shape)}, the manifest says {dtype} [N, C, H, W]"
        )
    if dtype == "uint8":
        norm = manifest.get("normalization")
        if not isinstance(norm, dict) or not all(len(norm.get(k) or ()) == images.shape[1] for k in ("mean", "std")):
            raise UsageError(f"{folder}: uint8 images need the normalization of their {images.shape[1]} channel(s)")
        images = from_pixels(images, norm)
    synset = SyntheticSet(images, tensors["labels"].long(), tensors.get("soft_labels"), manifest.get("meta", {}))
    return synset, manifest


def as_stored(synset: SyntheticSet, dtype: str, normalization) -> SyntheticSet:
    """The set as a `dtype` store would give it back (uint8: quantized to 8-bit pixels)."""
    if dtype == "float32":
        return synset
    norm = _normalization(normalization)
    images = from_pixels(to_pixels(synset.images, norm), norm)
    return SyntheticSet(images.to(synset.images.device), synset.labels, synset.soft_labels, synset.meta)


def is_image_folder(folder: Path) -> bool:
    return any(d.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir()) for d in folder.iterdir())


def import_image_folder(
    folder: Path, *, num_classes: int, ipc: int, channels: int, resolution: int, normalize
) -> SyntheticSet:
    """An ImageFolder (one folder per class, named by class index 0..C-1, or sorted names that
    must be exactly C) as a synthetic set; counts, classes and sizes are checked."""
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if all(n.isdigit() for n in names):
        order = sorted(names, key=int)
        unknown = [n for n in order if int(n) >= num_classes]
        if unknown:
            raise UsageError(f"{folder}: class folder(s) {unknown[:5]} name no class of a {num_classes}-class dataset")
        classes = [int(n) for n in order]
    else:
        check_class_order(folder, names)
        if len(names) != num_classes:
            raise UsageError(f"{folder}: {len(names)} class folders for a {num_classes}-class dataset")
        order, classes = names, list(range(num_classes))
    files, labels, _ = scan_image_folder(folder, order)
    counts = torch.bincount(torch.tensor(labels, dtype=torch.int64), minlength=len(order)).tolist()
    wrong = [f"{order[i]}: {n}" for i, n in enumerate(counts) if n != ipc]
    if wrong or len(order) != num_classes:
        missing = sorted(set(range(num_classes)) - set(classes))
        detail = ", ".join(wrong[:5]) + (f"; missing classes {missing[:5]}" if missing else "")
        raise UsageError(f"{folder}: expected {ipc} images in each of {num_classes} classes ({detail})")
    images, converted = [], Counter()
    for path in files:
        with Image.open(path) as header:
            if (header.mode in ("L", "I", "I;16", "1")) != (channels == 1):
                converted[header.mode] += 1
        img = decode_image(path, channels)
        if tuple(img.shape[1:]) != (resolution, resolution):
            raise UsageError(
                f"{path}: image is {img.shape[2]}x{img.shape[1]}, the protocol needs {resolution}x{resolution}"
            )
        images.append(img)
    if converted:
        modes = ", ".join(f"{n} {mode}" for mode, n in sorted(converted.items()))
        log.warning(
            "%s: converted %s image(s) to %s for the protocol's %d-channel dataset",
            folder,
            modes,
            "grayscale" if channels == 1 else "RGB",
            channels,
        )
    pixels = torch.stack(images).float() / 255
    return SyntheticSet(
        normalize(pixels), torch.tensor([classes[i] for i in labels], dtype=torch.int64), meta={"source": str(folder)}
    )
