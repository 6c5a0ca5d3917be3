"""Durable writes, torn caches, the store on shared filesystems and bad input at the edges."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from rd3_harness.cli import app
from rd3_harness.contract import SyntheticSet
from rd3_harness.data.synset import import_image_folder, load_synset, save_synset
from rd3_harness.errors import UsageError
from rd3_harness.files import atomic_write
from rd3_harness.plugins import get_plugins
from rd3_harness.protocol.preflight import check_protocol
from rd3_harness.protocol.schema import Protocol
from rd3_harness.results.store import Store, filesystem_type, store_mode
from rd3_harness.runner import synthesize
from rd3_harness.training.checkpoint import Checkpoints

SMOKE = Path(__file__).resolve().parents[1] / "protocols" / "cpu" / "smoke.v1.yaml"


def _fsynced(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    seen = _fsynced(monkeypatch)
    path = tmp_path / "sub" / "data.bin"
    atomic_write(path, lambda p: p.write_bytes(b"x" * 1000))
    assert path.read_bytes() == b"x" * 1000
    assert seen[0].endswith(f".data.bin.{socket.gethostname()}.{os.getpid()}.tmp")
    assert seen[1] == str(path.parent)


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "weights.safetensors"
    host = socket.gethostname()
    stale = tmp_path / f".{path.name}.{host}.{dead.pid}.tmp"
    writing = tmp_path / f".{path.name}.{host}.{os.getppid()}.tmp"  # a live process's, in progress
    remote = tmp_path / f".{path.name}.other-host.{dead.pid}.tmp"  # pids of other hosts mean nothing here
    for f in (stale, writing, remote):
        f.write_bytes(b"half")
    atomic_write(path, lambda p: p.write_bytes(b"whole"))
    assert path.read_bytes() == b"whole"
    assert not stale.exists() and writing.exists() and remote.exists()
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([path.name, writing.name, remote.name])


def test_every_cache_and_checkpoint_write_is_fsynced(tmp_path, monkeypatch):
    seen = _fsynced(monkeypatch)
    synset = SyntheticSet(torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]))
    save_synset(tmp_path / "set", synset, {}, normalization={"mean": [0.0], "std": [1.0]})
    Checkpoints(tmp_path / "ck", 1).save(0, ["a"], {"epoch": 1})
    written = {p for p in seen if not os.path.isdir(p)}
    names = sorted(os.path.basename(p).split(".")[1] for p in written)
    assert names == ["grid", "images", "manifest", "seed0-ca978112ca1b"]
    assert str(tmp_path / "set") in seen and str(tmp_path / "ck") in seen


def test_a_truncated_checkpoint_is_discarded_with_one_warning(tmp_path, caplog):
    checkpoints = Checkpoints(tmp_path, 1)
    state = {"epoch": 3, "weights": torch.arange(1000.0)}
    checkpoints.save(0, ["a"], state)
    assert torch.equal(checkpoints.load(0, ["a"], torch.device("cpu"))["weights"], state["weights"])
    path = checkpoints.path(0, ["a"])
    path.write_bytes(path.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING):
        assert checkpoints.load(0, ["a"], torch.device("cpu")) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"checkpoint {path} is truncated or damaged; discarded, its epochs are trained again"
    ]
    assert not path.exists()


def test_a_truncated_synthetic_set_is_made_again_with_one_warning(smoke_workspace, caplog):
    plugins = get_plugins()
    first = synthesize(plugins, smoke_workspace, "random")
    tensors = first.folder / "images.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-64])
    with pytest.raises(UsageError, match="does not match the manifest"):
        load_synset(first.folder)
    with caplog.at_level(logging.WARNING, logger="rd3_harness.runner"):
        again = synthesize(plugins, smoke_workspace, "random")
    assert not again.reused and torch.equal(again.synset.images, first.synset.images)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert str(tensors) in warning and "synthesizing it again" in warning
    assert synthesize(plugins, smoke_workspace, "random").reused


def test_the_store_mode_follows_the_filesystem_or_rd3_store_mode(tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nserver:/export {tmp_path / 'nfs'} nfs4 rw 0 0\n")
    assert filesystem_type(tmp_path / "nfs" / "out", mounts) == "nfs4"
    assert filesystem_type(tmp_path / "local", mounts) == "ext4"
    monkeypatch.setenv("RD3_STORE_MODE", "shared")
    store = Store.in_folder(tmp_path / "out")
    assert store.mode == "shared"
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone() == ("delete",)
    monkeypatch.setenv("RD3_STORE_MODE", "wal")
    assert sqlite3.connect(Store.in_folder(tmp_path / "out").path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    monkeypatch.setenv("RD3_STORE_MODE", "nfs")
    with pytest.raises(UsageError, match="use one of auto, wal, shared"):
        store_mode(tmp_path)


def _open_store(folder: Path, start, errors) -> None:
    start.wait()
    try:
        Store.in_folder(folder)
        errors.put(None)
    except Exception as exc:  # reported to the test, not lost in the child
        errors.put(repr(exc))


@pytest.mark.parametrize("mode", ["wal", "shared"])
def test_processes_creating_one_store_at_once_all_open_it(tmp_path, monkeypatch, mode):
    # torchrun's ranks open the output folder's new store together; switching the journal mode
    # takes a lock SQLite does not wait for (before the fix, 19 of 200 such rounds failed)
    monkeypatch.setenv("RD3_STORE_MODE", mode)
    ctx = multiprocessing.get_context("fork")
    for i in range(25):
        start, errors = ctx.Barrier(4), ctx.Queue()
        children = [ctx.Process(target=_open_store, args=(tmp_path / str(i), start, errors)) for _ in range(4)]
        for child in children:
            child.start()
        failures = [e for e in (errors.get(timeout=60) for _ in children) if e]
        for child in children:
            child.join()
        assert not failures, f"round {i}: {failures}"
        journal = sqlite3.connect(tmp_path / str(i) / "results.sqlite").execute("PRAGMA journal_mode").fetchone()
        assert journal == ("wal" if mode == "wal" else "delete",)


def test_a_bad_store_mode_exits_2_without_a_traceback(tmp_path, monkeypatch):
    Store.in_folder(tmp_path)
    monkeypatch.setenv("RD3_STORE_MODE", "lustre")
    result = CliRunner().invoke(app, ["results", "list", "-o", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "RD3_STORE_MODE='lustre'" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"evaluation": {"epochs": 10**9}}, "evaluation.epochs: 1,000,000,000 epochs would not finish"),
        ({"ipc": 7000}, "ipc: 7000 images per class, but class 0 of fashion-mnist has only 6000"),
    ],
)
def test_extreme_values_are_refused_before_any_work(
    rd3_settings, smoke_workspace, tmp_path, monkeypatch, change, message
):
    monkeypatch.setenv("RD3_HOME", str(rd3_settings.home))
    data = yaml.safe_load(SMOKE.read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--plugin", "random", "-p", str(protocol), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (out / "synsets").exists()


def test_a_huge_resolution_is_warned_about_or_refused_for_memory(caplog):
    data = yaml.safe_load(SMOKE.read_text())
    data["dataset"]["resolution"] = 4096
    protocol = Protocol.model_validate(data)
    sizes = [6000] * 10
    with caplog.at_level(logging.WARNING):
        check_protocol(protocol, native_resolution=28, channels=1, class_sizes=sizes, memory_bytes=64 * 2**30)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("dataset.resolution: 4096 px is 146x the 28 px of fashion-mnist images (upsampled)")
    with pytest.raises(UsageError, match=r"dataset.resolution: 4096 px makes the synthetic set alone 1.2 GiB"):
        check_protocol(protocol, native_resolution=28, channels=1, class_sizes=sizes, memory_bytes=2 * 2**30)


def test_an_rgb_folder_for_a_grayscale_protocol_says_what_it_converted(tmp_path, caplog):
    for c in range(3):
        (tmp_path / str(c)).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * c, 10 * i, 0)).save(tmp_path / str(c) / f"{i}.png")
    with caplog.at_level(logging.WARNING):
        synset = import_image_folder(tmp_path, num_classes=3, ipc=2, channels=1, resolution=8, normalize=lambda x: x)
    assert synset.images.shape == (6, 1, 8, 8)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning == f"{tmp_path}: converted 6 RGB image(s) to grayscale for the protocol's 1-channel dataset"
