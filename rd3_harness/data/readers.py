"""File readers for the dataset layouts the registry knows: idx (MNIST family), CIFAR pickles and
image folders. Everything read here is treated as untrusted input."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rd3_harness.data.folders import class_folders
from rd3_harness.errors import UsageError

log = logging.getLogger(__name__)
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


@dataclass
class FolderTree:
    """One walk of an ImageFolder tree: its image files (relative to `root`, '/'-separated, in
    class order and then path order), their labels, sizes and modification times, the entries
    skipped as not images, and the modification time of every folder walked (adding, removing
    or renaming an entry changes its folder's, and only its folder's)."""

    root: Path
    classes: list[str]
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtimes: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    folders: dict[str, int] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        return [self.root / f for f in self.files]

    def digest(self) -> str:
        """sha256 of the classes and every file's path, label, size and modification time."""
        h = hashlib.sha256("\0".join(self.classes).encode())
        for name, label, size, mtime in zip(self.files, self.labels, self.sizes, self.mtimes, strict=True):
            h.update(f"\n{name}\0{label}\0{size}\0{mtime}".encode())
        return h.hexdigest()

    def warn_skipped(self) -> None:
        if self.skipped:
            log.warning(
                "%s: %d non-image entr%s skipped (only %s are read): %s%s",
                self.root,
                len(self.skipped),
                "y" if len(self.skipped) == 1 else "ies",
                " ".join(sorted(IMAGE_SUFFIXES)),
                ", ".join(self.skipped[:5]),
                ", ..." if len(self.skipped) > 5 else "",
            )


def _refuse_outside(path: str, real_root: str, root: Path) -> None:
    target = os.path.realpath(path)
    if os.path.commonpath([target, real_root]) != real_root:
        raise UsageError(f"{path}: leads outside {root} (symlink to {target}): refused")


def _walk(folder: str, rel: str, label: int, real_root: str, tree: FolderTree) -> None:
    try:
        tree.folders[rel] = os.stat(folder).st_mtime_ns  # before the listing: a later change is seen
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        raise UsageError(f"{folder}: cannot read this folder ({exc.strerror})") from None
    for entry in entries:
        name = f"{rel}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            _walk(entry.path, name, label, real_root, tree)
            continue
        image = os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
        if image and entry.is_symlink():
            _refuse_outside(entry.path, real_root, tree.root)
        if not (image and entry.is_file()):
            tree.skipped.append(name)  # other files, links to folders (not followed), broken links
            continue
        st = entry.stat()
        tree.files.append(name)
        tree.labels.append(label)
        tree.sizes.append(st.st_size)
        tree.mtimes.append(st.st_mtime_ns)


def walk_image_folder(folder: Path, classes: list[str] | None = None) -> FolderTree:
    """Walk an ImageFolder tree (one sub-folder per class, images anywhere below it) with one
    `os.scandir` per folder. Class order is `class_folders`'. Links that lead outside `folder`
    are refused (only links are resolved); links to folders are not followed; a class folder
    without images is an error naming it."""
    try:
        root_mtime = os.stat(folder).st_mtime_ns  # before the listing, as for every folder
    except OSError as exc:
        raise UsageError(f"{folder}: cannot read this folder ({exc.strerror})") from None
    tree = FolderTree(folder, class_folders(folder, classes), folders={"": root_mtime})
    real_root = os.path.realpath(folder)
    for label, name in enumerate(tree.classes):
        top = folder / name
        if top.is_symlink():
            _refuse_outside(str(top), real_root, folder)
        before = len(tree.files)
        _walk(str(top), name, label, real_root, tree)
        if len(tree.files) == before:
            raise UsageError(
                f"{top}: class folder {name!r} holds no images ({' '.join(sorted(IMAGE_SUFFIXES))}); "
                "add its images or remove the folder"
            )
    return tree


def scan_image_folder(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Files, labels and class names of an ImageFolder tree (see `walk_image_folder`); entries
    that are not images are skipped with one warning line naming them."""
    tree = walk_image_folder(folder, classes)
    tree.warn_skipped()
    return tree.paths(), tree.labels, tree.classes


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


def decode_image(path: Path | bytes, channels: int, *, name: str | None = None) -> torch.Tensor:
    """Decode one image (a file, or its bytes called `name`) to uint8 [C, H, W]; a broken one is
    named in the error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            return data.reshape(img.height, img.width, channels).permute(2, 0, 1).contiguous()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"{name or path}: unreadable or truncated image ({exc})") from None
