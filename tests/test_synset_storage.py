"""Honest storage of synthetic sets: uint8 pixels by default (float32 when the protocol says so),
the stored set is the evaluated one, format-1 sets still load, the grid stays small."""

from __future__ import annotations

import copy
import json
import logging

import numpy
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from rd3_harness.contract import SyntheticSet
from rd3_harness.data.synset import (
    GRID_CLASSES,
    GRID_PER_CLASS,
    from_pixels,
    import_image_folder,
    load_synset,
    save_synset,
    to_pixels,
)
from rd3_harness.errors import UsageError
from rd3_harness.files import file_sha256
from rd3_harness.kit.contexts import synthesize_smoke
from rd3_harness.protocol.io import hashed_settings, protocol_hash
from rd3_harness.protocol.schema import Protocol
from rd3_harness.runner import evaluation_input
from rd3_harness.synthesis import synthesis_key

NORM = {"mean": [0.2860], "std": [0.3530]}  # the smoke protocol's Fashion-MNIST statistics


def _with_storage(protocol: Protocol, dtype: str) -> Protocol:
    data = protocol.model_dump(mode="json")
    data["evaluation"]["storage_dtype"] = dtype
    return Protocol.model_validate(data)


def _workspace(ws, dtype: str):
    view = copy.copy(ws)
    view.protocol = _with_storage(ws.protocol, dtype)
    return view


def test_uint8_round_trip_of_real_images_is_exact(smoke_real_data):
    indices = torch.arange(len(smoke_real_data))
    real = smoke_real_data.get(indices)  # normalized, as plugins see them
    pixels = to_pixels(real, NORM)
    assert pixels.dtype == torch.uint8 and torch.equal(pixels, smoke_real_data.raw(indices).cpu())
    assert torch.equal(from_pixels(pixels, NORM), real.cpu())


def test_the_stored_set_is_the_evaluated_one_bit_for_bit(smoke_workspace, tmp_path):
    ws = smoke_workspace
    made = synthesize_smoke(ws, "random")
    m = made.manifest
    assert m["format"] == "rd3-synset/2" and m["storage_dtype"] == "uint8" and m["normalization"] == NORM
    tensors = made.folder / "images.safetensors"
    assert m["storage_bytes"] == tensors.stat().st_size
    assert m["storage_bytes"] < m["pixel_bytes"] + 2000  # 1 byte a pixel, plus labels and header
    loaded, _ = load_synset(made.folder)
    assert torch.equal(made.synset.images, loaded.images) and torch.equal(made.synset.labels, loaded.labels)
    assert evaluation_input(ws, made) is made.synset
    assert torch.equal(made.synset.images, ws.train.get(torch.tensor(m["meta"]["indices"])))  # real: exact
    cached = synthesize_smoke(ws, "random", reuse=True)
    assert cached.reused and torch.equal(cached.synset.images, made.synset.images)

    folder = tmp_path / "pngs"  # exported as PNG files and imported again: the same evaluation input
    pixels = to_pixels(loaded.images, NORM)
    for i, (x, y) in enumerate(zip(pixels, loaded.labels.tolist(), strict=True)):
        (folder / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[0].numpy()).save(folder / str(y) / f"{i:03d}.png")
    imported = import_image_folder(
        folder, num_classes=10, ipc=ws.protocol.ipc, channels=1, resolution=28, normalize=ws.test.normalize
    )
    save_synset(tmp_path / "imported", imported, {}, normalization=NORM)
    again, _ = load_synset(tmp_path / "imported")
    assert torch.equal(again.images, loaded.images)


def test_float32_storage_keeps_the_values_and_changes_the_hash(smoke_workspace, tmp_path):
    p = smoke_workspace.protocol
    f32 = _with_storage(p, "float32")
    assert "storage_dtype" not in hashed_settings(p)["evaluation"]
    assert hashed_settings(f32)["evaluation"]["storage_dtype"] == "float32"
    assert protocol_hash(f32) != protocol_hash(p) and protocol_hash(_with_storage(p, "uint8")) == protocol_hash(p)
    assert synthesis_key("m", "1", {}, f32) != synthesis_key("m", "1", {}, p)

    images = torch.linspace(-3, 3, 4 * 28 * 28).view(4, 1, 28, 28)  # reaches beyond the pixel range
    synset = SyntheticSet(images, torch.tensor([0, 0, 1, 1]), soft_labels=torch.rand(4, 10))
    stored, m = save_synset(tmp_path / "f32", synset, {}, normalization=NORM, dtype="float32")
    loaded, _ = load_synset(tmp_path / "f32")
    assert m["storage_dtype"] == "float32" and torch.equal(loaded.images, images) and torch.equal(stored.images, images)
    assert torch.equal(loaded.soft_labels, synset.soft_labels)

    stored, m = save_synset(tmp_path / "u8", synset, {}, normalization=NORM)  # values outside [0, 1] are clamped
    loaded, _ = load_synset(tmp_path / "u8")
    lo, hi = (torch.tensor(v - NORM["mean"][0]) / NORM["std"][0] for v in (0.0, 1.0))
    assert torch.equal(loaded.images, stored.images) and loaded.images.min() == lo and loaded.images.max() == hi
    assert torch.equal(loaded.soft_labels, synset.soft_labels)  # soft labels stay float
    assert (tmp_path / "f32" / "images.safetensors").stat().st_size > 3 * m["storage_bytes"]


def _format1(folder, images: torch.Tensor, labels: torch.Tensor) -> None:
    folder.mkdir()
    save_file({"images": images, "labels": labels}, str(folder / "images.safetensors"))
    manifest = {
        "format": "rd3-synset/1",
        "method": "old",
        "ipc": 2,
        "num_classes": 10,
        "count": len(images),
        "sha256": file_sha256(folder / "images.safetensors"),
        "storage_bytes": (folder / "images.safetensors").stat().st_size,
        "pixel_bytes": images.numel(),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_format_1_sets_load_and_are_evaluated_as_the_protocol_stores(smoke_workspace, tmp_path, caplog):
    from rd3_harness.runner import given_set

    labels = torch.arange(10).repeat_interleave(2)
    images = torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    _format1(tmp_path / "old", images, labels)
    synset, manifest = load_synset(tmp_path / "old")
    assert torch.equal(synset.images, images) and torch.equal(synset.labels, labels)
    synth, _ = given_set(synset, manifest, tmp_path / "old")
    assert evaluation_input(_workspace(smoke_workspace, "float32"), synth) is synset
    with caplog.at_level(logging.WARNING, logger="rd3_harness.runner"):
        quantized = evaluation_input(smoke_workspace, synth)
    assert "evaluated as uint8 pixels" in caplog.text
    assert torch.equal(quantized.images, from_pixels(to_pixels(images, NORM), NORM))


def test_the_grid_shows_a_bounded_sample_named_in_the_manifest(tmp_path):
    classes, ipc = 200, 12
    labels = torch.arange(classes).repeat(ipc)  # interleaved: class c sits at c, c + 200, ...
    images = torch.rand(classes * ipc, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    _, m = save_synset(
        tmp_path / "set", SyntheticSet(images, labels), {}, normalization={"mean": [0] * 3, "std": [1] * 3}
    )
    grid = m["grid"]
    assert len(grid["classes"]) == GRID_CLASSES and grid["classes"][0] == 0 and grid["classes"][-1] == classes - 1
    assert len(set(grid["classes"])) == GRID_CLASSES
    assert all(len(row) == GRID_PER_CLASS for row in grid["images"])
    assert grid["images"][0] == [classes * k for k in range(GRID_PER_CLASS)]
    with Image.open(tmp_path / "set" / "grid.png") as png:
        assert png.size == (GRID_PER_CLASS * 9 + 1, GRID_CLASSES * 9 + 1)
        first = torch.from_numpy(numpy.array(png.crop((1, 1, 9, 9)))).permute(2, 0, 1)
    assert torch.equal(first, to_pixels(images[:1], {"mean": [0] * 3, "std": [1] * 3})[0])


def test_a_changed_uint8_set_is_refused(tmp_path):
    synset = SyntheticSet(torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]))
    save_synset(tmp_path / "set", synset, {}, normalization=NORM)
    tensors = tmp_path / "set" / "images.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="does not match the manifest"):
        load_synset(tmp_path / "set")
