"""Synthetic-set files: `manifest.json` + `images.safetensors` (sha256 in the manifest) + a PNG
grid for people; and import of an ImageFolder of PNG/JPG files made elsewhere."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
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
FORMAT = "rd3-synset/1"
MANIFEST, TENSORS, GRID = "manifest.json", "images.safetensors", "grid.png"


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def save_synset(folder: Path, synset: SyntheticSet, info: dict[str, Any], denormalize=None) -> dict[str, Any]:
    """Write the set atomically; returns the manifest (with sha256 and storage bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"images": synset.images.detach().float().cpu().contiguous(), "labels": synset.labels.cpu().contiguous()}
    if synset.soft_labels is not None:
        tensors["soft_labels"] = synset.soft_labels.detach().float().cpu().contiguous()
    atomic_write(folder / TENSORS, lambda p: save_file(tensors, str(p)))
    n, c, h, w = tensors["images"].shape
    manifest = {
        "format": FORMAT,
        **info,
        "count": n,
        "image_shape": [c, h, w],
        "sha256": file_sha256(folder / TENSORS),
        "storage_bytes": (folder / TENSORS).stat().st_size,
        "pixel_bytes": n * c * h * w,
        "soft_labels": synset.soft_labels is not None,
        "meta": {k: _json_safe(v) for k, v in synset.meta.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write(folder / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=2)))
    if denormalize is not None:
        save_grid(folder / GRID, denormalize(tensors["images"]), tensors["labels"])
    return manifest


def save_grid(path: Path, pixels: torch.Tensor, labels: torch.Tensor, max_per_class: int = 10) -> None:
    """One row per class, up to `max_per_class` images each."""
    import torchvision

    rows = []
    for c in labels.unique(sorted=True).tolist():
        rows.append(pixels[labels == c][:max_per_class])
    per_row = max(len(r) for r in rows)
    padded = [torch.cat([r, torch.zeros(per_row - len(r), *r.shape[1:])]) for r in rows]
    grid = torch.cat(padded).clamp(0, 1)
    atomic_write(path, lambda p: torchvision.utils.save_image(grid, str(p), nrow=per_row, padding=1, format="png"))


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{folder}: no {MANIFEST} (not a synthetic set made by rd3h)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UsageError(f"{path}: unknown format {manifest.get('format') if isinstance(manifest, dict) else None!r}")
    return manifest


def load_synset(folder: Path) -> tuple[SyntheticSet, dict[str, Any]]:
    """Read a saved set; the tensor file must match the manifest's sha256."""
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
    synset = SyntheticSet(
        tensors["images"], tensors["labels"].long(), tensors.get("soft_labels"), manifest.get("meta", {})
    )
    return synset, manifest


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
