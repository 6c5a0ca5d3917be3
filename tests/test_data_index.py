"""Image-folder datasets: the `imagefolder:PATH` spec, the file index and its cache, and the
edge cases of a folder tree (non-image files, empty or misnamed class folders), through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from rd3_harness.cli import app

runner = CliRunner()
SMOKE = Path(__file__).resolve().parents[1] / "protocols" / "cpu" / "smoke.v1.yaml"
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def make_image_folder(root: Path, per_class: tuple[int, int] = (8, 4), classes=("cat", "dog", "fox")) -> Path:
    """train/ and val/ class folders of small noisy images, one dominant colour per class, half
    PNG and half JPEG, some of them in a nested sub-folder."""
    g = torch.Generator().manual_seed(0)
    for split, n in zip(("train", "val"), per_class, strict=True):
        for c, name in enumerate(classes):
            for i in range(n):
                folder = root / split / name / ("extra" if i % 3 == 2 else "")
                folder.mkdir(parents=True, exist_ok=True)
                base = torch.tensor(COLOURS[c % len(COLOURS)], dtype=torch.float32).view(3, 1, 1)
                pixels = (base + 40 * torch.randn(3, 20, 24, generator=g)).clamp(0, 255).to(torch.uint8)
                img = Image.fromarray(pixels.permute(1, 2, 0).numpy())
                img.save(folder / f"{name}_{i:02d}.{'png' if i % 2 else 'jpg'}")
    return root


def folder_protocol(tmp_path: Path, dataset: str, **evaluation) -> Path:
    """The smoke protocol on an image folder at 16 px (teacher on the few images there are)."""
    data = yaml.safe_load(SMOKE.read_text())
    data["name"] = "test/imagefolder"
    data["dataset"] = {
        "name": dataset,
        "resolution": 16,
        "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    for teacher in (data["teacher"], *data["synthesis_teachers"]):
        teacher["recipe"]["images_per_class"] = 8
    data["evaluation"].update(evaluation)
    path = tmp_path / "imagefolder.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """CLI environment: private home, data root and output folder, CPU."""
    for name, sub in (("RD3_HOME", "home"), ("RD3_DATA_ROOT", "data"), ("RD3_OUT", "out")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("RD3_DEVICE", "cpu")
    monkeypatch.setenv("RD3_WORKERS", "0")
    return tmp_path


def invoke(*args: str):
    return runner.invoke(app, list(args))


def refused(result, message: str) -> None:
    """The command stopped on bad input: exit 2, the message, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output, result.output


def test_imagefolder_dataset_runs_end_to_end_without_a_plugin(env):
    make_image_folder(env / "data" / "tiny")
    protocol = folder_protocol(env, "imagefolder:tiny", epochs=10, labels={"kind": "hard"}, loss={"kind": "ce"})
    valid = invoke("protocol", "validate", "--json", str(protocol))
    assert valid.exit_code == 0, valid.output
    assert json.loads(valid.stdout)[0]["notes"] == []
    result = invoke("run", "--plugin", "random", "-p", str(protocol), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (record,) = doc["records"]
    assert doc["run"]["protocol"]["dataset"]["name"] == "imagefolder:tiny"
    assert doc["run"]["synset"]["count"] == 3 * 2
    assert record["top1"] > 0.9  # the classes differ by colour: far above chance (1/3)


def test_imagefolder_path_may_be_absolute(env):
    from rd3_harness.data.datasets import open_dataset
    from rd3_harness.settings import Settings

    root = make_image_folder(env / "elsewhere" / "set", per_class=(3, 2))
    info, train, test = open_dataset({}, f"imagefolder:{root}", Settings(), resolution=16)
    assert (info.num_classes, info.channels, info.resolution) == (3, 3, 16)
    assert len(train) == 9 and len(test) == 6
    assert train.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert train.pixels(torch.tensor([0, 8]), 16).shape == (2, 3, 16, 16)


def test_missing_imagefolder_is_a_note_for_validate_and_an_error_for_run(env):
    protocol = folder_protocol(env, "imagefolder:not-there")
    valid = invoke("protocol", "validate", str(protocol))
    assert valid.exit_code == 0, valid.output
    assert "note" in valid.stderr and "not-there not found (under the data root" in valid.stderr
    refused(invoke("run", "--plugin", "random", "-p", str(protocol)), "not-there not found")


def test_imagefolder_without_a_name_or_with_grey_normalization_is_invalid(env):
    for name, mean, expected in (
        ("imagefolder:", [0.5, 0.5, 0.5], "names no folder"),
        ("imagefolder:x", [0.5], "1 values for a 3-channel dataset"),
    ):
        path = folder_protocol(env, name)
        data = yaml.safe_load(path.read_text())
        data["dataset"]["normalization"] = {"mean": mean, "std": [0.25] * len(mean)}
        path.write_text(yaml.safe_dump(data))
        refused(invoke("protocol", "validate", str(path)), expected)
