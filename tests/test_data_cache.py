"""The decoded-pixel cache on a generated folder of JPEGs (Fashion-MNIST upscaled to 96 px,
colourised): each validation image is decoded once for a whole run and never again, the
accuracies equal the uncached path's, a damaged cache file is rebuilt with a warning."""

from __future__ import annotations

import collections
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from jpeg_folders import FMNIST, make_jpeg_folder
from typer.testing import CliRunner

from rd3_harness.cli import app
from rd3_harness.data.readers import scan_image_folder
from rd3_harness.data.real import FolderSplit, RealData

pytestmark = pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST is not installed")

runner = CliRunner()
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PROTOCOL = """\
name: test/jpeg-folder
version: "1"
dataset:
  name: imagefolder:jpeg-fmnist
  resolution: 16
  normalization: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
ipc: 2
teacher:
  kind: trained
  architecture: convnet_d1_w32_bn
  recipe:
    epochs: 1
    batch_size: 50
    optimizer: {kind: adamw, lr: 0.003}
    augmentation: {random_resized_crop: {scale: [0.35, 1.0]}, horizontal_flip: true}
synthesis_seed: 0
evaluation:
  students:
    - architecture: convnet_d1_w32_bn
    - architecture: convnet_d1_w32_none
  labels: {kind: online}
  loss: {kind: kl, temperature: 4}
  optimizer: {kind: adamw, lr: 0.003}
  augmentation: {random_resized_crop: {scale: [0.5, 1.0]}, horizontal_flip: true}
  epochs: 6
  batch_size: 10
  seeds: [0, 1]
"""


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory) -> Path:
    """10 classes, 20 training and 101 validation JPEGs each (1,010: three test batches of 500)."""
    return make_jpeg_folder(tmp_path_factory.mktemp("data") / "jpeg-fmnist", train_per_class=20, val_per_class=101)


@pytest.fixture
def decodes(monkeypatch, tmp_path) -> Path:
    """A file that gets one line per decoded image (also from DataLoader worker processes)."""
    log = tmp_path / "decodes.log"
    log.touch()
    original = FolderSplit.decode

    def counted(self, i):
        with open(log, "a") as f:
            f.write(f"{self.files[i]}\n")
        return original(self, i)

    monkeypatch.setattr(FolderSplit, "decode", counted)
    return log


@pytest.fixture
def threads_restored():
    """Puts torch's thread count back after a CLI run with --threads / RD3_THREADS."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _counts(log: Path) -> collections.Counter:
    counts = collections.Counter(log.read_text().splitlines())
    log.write_text("")
    return counts


def test_a_run_decodes_each_validation_image_once_and_a_second_run_none(
    jpeg_root, decodes, threads_restored, tmp_path, monkeypatch
):
    protocol = tmp_path / "jpeg.yaml"
    protocol.write_text(PROTOCOL)
    monkeypatch.setenv("RD3_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RD3_DATA_ROOT", str(jpeg_root.parent))
    monkeypatch.setenv("RD3_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("RD3_DEVICE", "cpu")
    monkeypatch.setenv("RD3_WORKERS", "2")
    monkeypatch.setenv("RD3_THREADS", "1")  # tiny tensors: a second thread only waits
    val = [str(p) for p in scan_image_folder(jpeg_root / "val")[0]]

    def run() -> list[tuple[str, int, float, float]]:
        result = runner.invoke(app, ["run", "--plugin", "random", "-p", str(protocol), "--json"])
        assert result.exit_code == 0, result.output
        records = json.loads(result.stdout)["records"]
        return sorted((r["student"], r["seed"], r["top1"], r["top5"]) for r in records)

    first = run()
    assert len(first) == 4 and sum(top1 for _, _, top1, _ in first) / 4 > 0.2  # chance: 0.1
    counts = _counts(decodes)
    assert {p: counts[p] for p in val} == dict.fromkeys(val, 1)  # teacher test + 2 students x 2 seeds
    assert run() == first
    assert _counts(decodes) == {}  # teacher, synthetic set and test pixels all come from caches
    monkeypatch.setenv("RD3_DATA_CACHE", "off")
    assert run() == first  # the uncached path gives the same accuracies exactly ...
    counts = _counts(decodes)
    assert {p: counts[p] for p in val} == dict.fromkeys(val, 4)  # ... decoding per student x seed


def test_truncated_cache_file_is_rebuilt_with_a_warning(jpeg_root, decodes, tmp_path, caplog):
    files, labels, _ = scan_image_folder(jpeg_root / "val")
    split = FolderSplit(files, labels, 3)
    cache = tmp_path / "pixels"

    def view(**options) -> RealData:
        return RealData(split, num_classes=10, resolution=16, mean=MEAN, std=STD, test=True, workers=2, **options)

    uncached = view().raw(torch.arange(len(split)))
    assert torch.equal(view(cache=cache).raw(torch.arange(len(split))), uncached)
    assert len(_counts(decodes)) == len(split)
    (data,) = cache.glob("*.u8")
    assert data.stat().st_size == uncached.numel()
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="rd3_harness.data.cache"):
        again = view(cache=cache)
        sub = again.subset(torch.tensor([5, 700, 3]))
        assert torch.equal(sub.raw(torch.tensor([2, 0])), uncached[[3, 5]])
    (warning,) = [r for r in caplog.records if "pixel cache" in r.getMessage()]
    assert str(data) in warning.getMessage() and "truncated or damaged" in warning.getMessage()
    assert sum(_counts(decodes).values()) == len(split)  # rebuilt once, in full
    assert torch.equal(again.raw(torch.arange(len(split))), uncached)
    batches = list(again.batches(400))
    assert [len(x) for x, _ in batches] == [400, 400, 210]
    assert torch.equal(torch.cat([y for _, y in batches]), split.labels)
    assert not os.listdir(cache) == [] and _counts(decodes) == {}


@pytest.mark.slow
@pytest.mark.parametrize("plugin", ["rded", "herding"])
def test_plugin_runs_end_to_end_from_a_jpeg_folder(plugin, tmp_path_factory, monkeypatch):
    """`rd3h run` on cpu/jpeg-folder-64.v1: the folder the protocol describes, generated here."""
    pytest.importorskip(f"rd3_plugin_{plugin}")
    data = tmp_path_factory.getbasetemp() / "jpeg-folder-64"
    if not (data / "jpeg-fmnist-96").is_dir():
        make_jpeg_folder(data / "jpeg-fmnist-96", train_per_class=100, val_per_class=50)
    monkeypatch.setenv("RD3_HOME", str(data / "home"))  # shared by both plugins: one teacher
    monkeypatch.setenv("RD3_DATA_ROOT", str(data))
    monkeypatch.setenv("RD3_OUT", str(data / "out"))
    monkeypatch.setenv("RD3_DEVICE", "cpu")
    result = runner.invoke(app, ["run", "--plugin", plugin, "-p", "cpu/jpeg-folder-64.v1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["run"]["status"] == "complete"
    (record,) = doc["records"]
    assert record["top1"] > 0.3  # chance: 0.1
