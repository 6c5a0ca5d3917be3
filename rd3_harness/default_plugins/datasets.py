"""Built-in datasets: the MNIST family and CIFAR (torchvision layouts), Tiny-ImageNet and the
ImageNet family (ImageFolder layouts). Registering them imports no torch; reading one does."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from rd3_harness.data.datasets import IMAGENET_MEAN, IMAGENET_STD, has_splits, load_image_folders
from rd3_harness.hookspecs import hookimpl
from rd3_harness.registry import DatasetInfo

if TYPE_CHECKING:
    from rd3_harness.data.real import Split

IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_idx(folder: Path, stem: str) -> Path | None:
    return next((folder / n for n in (f"{stem}.gz", stem) if (folder / n).is_file()), None)


def _idx_present(folder: Path) -> bool:
    return all(_find_idx(folder, stem) for stem in IDX)


def _idx_load(folder: Path) -> tuple[Split, Split]:
    from rd3_harness.data.readers import read_idx
    from rd3_harness.data.real import TensorSplit

    xtr, ytr, xte, yte = (read_idx(_find_idx(folder, stem)) for stem in IDX)
    return TensorSplit(xtr[:, None], ytr.long()), TensorSplit(xte[:, None], yte.long())


def _torchvision_download(cls_name: str):
    def download(root: Path) -> None:
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        for train in (True, False):
            cls(str(root), train=train, download=True)

    return download


def _mnist_family(name: str, folder: str, tv_name: str, mean: float, std: float, extra: list[str], how: str):
    return DatasetInfo(
        name=name,
        num_classes=10,
        channels=1,
        resolution=28,
        mean=(mean,),
        std=(std,),
        candidates=lambda root: [root / folder, root / tv_name / "raw", *map(Path, extra)],
        is_present=_idx_present,
        load=_idx_load,
        how_to_get=how,
        download=_torchvision_download(tv_name),
        description=f"{name}: 60k/10k grayscale 28x28, idx files",
    )


def _cifar(name: str, classes: int, folder: str, train: list[str], test: list[str], key: str, mean, std):
    def load(path: Path) -> tuple[Split, Split]:
        from rd3_harness.data.readers import read_cifar_batches
        from rd3_harness.data.real import TensorSplit

        xtr, ytr = read_cifar_batches(path, train, key)
        xte, yte = read_cifar_batches(path, test, key)
        return TensorSplit(xtr, ytr), TensorSplit(xte, yte)

    return DatasetInfo(
        name=name,
        num_classes=classes,
        channels=3,
        resolution=32,
        mean=mean,
        std=std,
        candidates=lambda root: [root / folder, root / name / folder],
        is_present=lambda p: all((p / f).is_file() for f in train + test),
        load=load,
        how_to_get=f"put the python version of {name} ({folder}/) under the data root",
        download=_torchvision_download(name.upper().replace("-", "")),
        description=f"{name}: 50k/10k colour 32x32, torchvision pickle layout",
    )


def _folder_dataset(name: str, classes: int, resolution: int, folders: list[str], how: str, download=None):
    return DatasetInfo(
        name=name,
        num_classes=classes,
        channels=3,
        resolution=resolution,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        candidates=lambda root: [root / f for f in folders],
        is_present=has_splits,
        load=functools.partial(load_image_folders, expected_classes=classes),
        how_to_get=how,
        download=download,
        description=f"{name}: {classes} classes, ImageFolder layout (train/ and val/), used at {resolution}px",
    )


def _imagenette_download(root: Path) -> None:
    import torchvision

    for split in ("train", "val"):
        torchvision.datasets.Imagenette(str(root), split=split, size="full", download=True)


CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@hookimpl
def register_datasets(register):
    register(
        _mnist_family(
            "fashion-mnist",
            "fashion-mnist",
            "FashionMNIST",
            0.2860,
            0.3530,
            ["/usr/share/datasets/fashion-mnist"],
            "on Debian, `apt-get install dataset-fashion-mnist` (installs /usr/share/datasets/fashion-mnist)",
        )
    )
    register(
        _mnist_family("mnist", "mnist", "MNIST", 0.1307, 0.3081, [], "put the four MNIST idx files in <root>/mnist/")
    )
    register(
        _cifar(
            "cifar10",
            10,
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            "labels",
            CIFAR10_MEAN,
            CIFAR10_STD,
        )
    )
    register(
        _cifar("cifar100", 100, "cifar-100-python", ["train"], ["test"], "fine_labels", CIFAR100_MEAN, CIFAR100_STD)
    )
    register(
        _folder_dataset(
            "tiny-imagenet",
            200,
            64,
            ["tiny-imagenet-200", "tiny-imagenet"],
            "unzip tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) into the data root",
        )
    )
    register(
        _folder_dataset(
            "imagenette",
            10,
            224,
            ["imagenette2", "imagenette2-320", "imagenette"],
            "extract imagenette2.tgz (https://github.com/fastai/imagenette) into the data root",
            download=_imagenette_download,
        )
    )
    register(
        _folder_dataset(
            "imagewoof",
            10,
            224,
            ["imagewoof2", "imagewoof2-320", "imagewoof"],
            "extract imagewoof2.tgz (https://github.com/fastai/imagenette) into the data root",
        )
    )
    register(
        _folder_dataset(
            "imagenet-1k",
            1000,
            224,
            ["imagenet", "imagenet-1k", "ILSVRC2012"],
            "get ILSVRC2012 from https://image-net.org and arrange train/ and val/ with one folder per "
            "class (wnid), as torchvision's ImageFolder expects",
        )
    )
