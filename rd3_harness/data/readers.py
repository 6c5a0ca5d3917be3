"""File readers for the dataset layouts the registry knows: idx (MNIST family), CIFAR pickles and
image folders. Everything read here is treated as untrusted input."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import torch

from rd3_harness.data.folders import class_folders
from rd3_harness.errors import UsageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"})


def _open_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_idx(path: Path) -> torch.Tensor:
    """An idx file (uint8 payload) as a tensor of its declared shape."""
    data = _open_maybe_gz(path)
    if len(data) < 4:
        raise UsageError(f"{path}: not an idx file (too short)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 4:
        raise UsageError(f"{path}: not an unsigned-byte idx file")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    count = 1
    for d in dims:
        count *= d
    payload = data[4 + 4 * ndim :]
    if len(payload) != count:
        raise UsageError(f"{path}: truncated or padded: {len(payload)} bytes for shape {dims}")
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).reshape(dims)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches: dicts, lists and numpy arrays, and nothing that runs code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batches(folder: Path, files: list[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in files:
        path = folder / name
        try:
            entry = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
            data = torch.as_tensor(entry["data"]).reshape(-1, 3, 32, 32)
            target = torch.as_tensor(entry[label_key], dtype=torch.int64)
        except (pickle.UnpicklingError, KeyError, ValueError, RuntimeError, EOFError) as exc:
            raise UsageError(f"{path}: not a CIFAR batch file ({exc})") from None
        if len(target) != len(data):
            raise UsageError(f"{path}: {len(data)} images but {len(target)} labels")
        images.append(data)
        labels.append(target)
    return torch.cat(images), torch.cat(labels)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def scan_image_folder(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Files of an ImageFolder tree (one sub-folder per class, images anywhere below it).

    Class order is `class_folders`' unless `classes` fixes it. Links that lead outside `folder`
    are refused.
    """
    classes = class_folders(folder, classes)
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        for path in sorted((folder / name).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not _inside(path, folder):
                raise UsageError(f"{path}: leads outside {folder} (symlink?): refused")
            files.append(path)
            labels.append(index)
    return files, labels, list(classes)


def read_tiny_val(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Tiny-ImageNet's original val layout: images/ plus val_annotations.txt."""
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for line in (folder / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        if parts[1] not in index:
            raise UsageError(f"{folder}/val_annotations.txt: unknown class {parts[1]!r}")
        path = folder / "images" / parts[0]
        if not _inside(path, folder):
            raise UsageError(f"{path}: leads outside {folder}: refused")
        files.append(path)
        labels.append(index[parts[1]])
    return files, labels


def decode_image(path: Path, channels: int) -> torch.Tensor:
    """Decode one image file to uint8 [C, H, W]; a broken file is named in the error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            return data.reshape(img.height, img.width, channels).permute(2, 0, 1).contiguous()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"{path}: unreadable or truncated image ({exc})") from None
