"""A generated image-folder dataset of JPEGs for the data-pipeline tests and benchmarks:
Fashion-MNIST images upscaled to 96 px, colourised with a random tint per image, written as JPEG
in `train/` and `val/` class folders (10 classes)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from rd3_harness.data.readers import read_idx

FMNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def _colourise(gray: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """uint8 [N, 28, 28] to uint8 [N, 3, size, size]: upscaled, a random tint on a random dark ground."""
    x = F.interpolate(gray[:, None].float() / 255, size=(size, size), mode="bilinear", align_corners=False)
    tint = 0.4 + 0.6 * torch.rand(len(gray), 3, 1, 1, generator=g)
    ground = 0.25 * torch.rand(len(gray), 3, 1, 1, generator=g)
    return ((ground + x * (tint - ground)) * 255).round().clamp(0, 255).to(torch.uint8)


def write_split(folder: Path, images: torch.Tensor, labels: torch.Tensor, size: int, seed: int) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    rgb = _colourise(images, size, g)
    for c in CLASSES:
        (folder / c).mkdir(parents=True, exist_ok=True)
    for i, (x, y) in enumerate(zip(rgb, labels.tolist())):
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(folder / CLASSES[y] / f"{i:06d}.jpg", quality=90)


def make_jpeg_folder(root: Path, train_per_class: int, val_per_class: int, size: int = 96) -> Path:
    """Write the dataset under `root` (`root/train`, `root/val`) from the first images of each
    class of Fashion-MNIST's training and test files; returns `root`."""
    for split, stem, per_class, seed in (
        ("train", "train", train_per_class, 0),
        ("val", "t10k", val_per_class, 1),
    ):
        images = read_idx(FMNIST / f"{stem}-images-idx3-ubyte.gz")
        labels = read_idx(FMNIST / f"{stem}-labels-idx1-ubyte.gz").long()
        keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(len(CLASSES))])
        write_split(root / split, images[keep], labels[keep], size, seed)
    return root


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    make_jpeg_folder(args.root, args.train_per_class, args.val_per_class, args.size)
    print(args.root)
