"""Dataset registry and readers on the real Fashion-MNIST files."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import pytest
import torch

from rd3_harness.data.datasets import get_dataset, open_dataset
from rd3_harness.data.readers import _ArrayUnpickler, read_idx, scan_image_folder
from rd3_harness.data.real import RealData
from rd3_harness.errors import DataMissing, UsageError
from rd3_harness.plugins import get_plugins
from rd3_harness.settings import Settings


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("home"), device="cpu")
    try:
        return open_dataset(get_plugins().registries.datasets, "fashion-mnist", settings)
    except DataMissing as exc:
        pytest.skip(str(exc))


def test_fashion_mnist_shapes_and_label_counts(fmnist):
    info, train, test = fmnist
    assert (info.num_classes, info.channels, info.resolution) == (10, 1, 28)
    assert train.images.shape == (60_000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert 0.28 < train.images.float().mean().item() / 255 < 0.29  # the published mean 0.2860


def test_real_data_sampling_is_seeded_and_class_pure(fmnist):
    info, train, _ = fmnist
    data = RealData(train, num_classes=10, resolution=28, mean=info.mean, std=info.std)
    a = data.sample_indices(3, 5, torch.Generator().manual_seed(7))
    b = data.sample_indices(3, 5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and len(set(a.tolist())) == 5
    assert (data.labels[a] == 3).all()
    x = data.get(a)
    assert x.shape == (5, 1, 28, 28)
    assert torch.allclose(data.denormalize(x), data.raw(a).float() / 255, atol=1e-6)
    resized = RealData(train, num_classes=10, resolution=32, mean=info.mean, std=info.std)
    assert resized.get(a).shape == (5, 1, 32, 32)
    with pytest.raises(UsageError, match="class 3 has 6000 images; 6001 were asked for"):
        data.sample_indices(3, 6001)


def test_missing_dataset_says_where_and_how(tmp_path):
    with pytest.raises(DataMissing) as info:
        open_dataset(get_plugins().registries.datasets, "cifar10", Settings(home=tmp_path, device="cpu"))
    message = str(info.value)
    assert str(tmp_path / "data" / "cifar-10-batches-py") in message
    assert "--download" in message and "RD3_DATA_ROOT" in message


def test_truncated_idx_is_refused(tmp_path):
    src = get_dataset(get_plugins().registries.datasets, "fashion-mnist").locate(Path("/nonexistent")) or Path(
        "/usr/share/datasets/fashion-mnist"
    )
    data = gzip.decompress((src / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "short").write_bytes(data[:-10])
    with pytest.raises(UsageError, match="truncated"):
        read_idx(tmp_path / "short")


def test_cifar_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    import io

    with pytest.raises(pickle.UnpicklingError, match="refused global builtins.print"):
        _ArrayUnpickler(io.BytesIO(pickle.dumps({"data": Evil()})), encoding="latin1").load()


def test_image_folder_refuses_links_leaving_the_root(tmp_path):
    from PIL import Image

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    Image.new("L", (4, 4)).save(outside / "x.png")
    (root / "a" / "x.png").symlink_to(outside / "x.png")
    with pytest.raises(UsageError, match="leads outside"):
        scan_image_folder(root)
