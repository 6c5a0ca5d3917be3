"""One test per hook (`test_hook_<name>`, checked by test_hookspecs_documented.py), each through a
fake plugin installed the way pip installs one."""

from __future__ import annotations

import json

import pytest
import torch
from fake_plugins import install
from typer.testing import CliRunner

from rd3_harness.cli import app
from rd3_harness.errors import PluginFailure
from rd3_harness.plugins import get_plugins
from rd3_harness.testing import synthesize_smoke

runner = CliRunner()


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    install(monkeypatch, tmp_path / "site")


def cli_json(*args: str):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_hook_method_info(fakes):
    info = cli_json("plugins", "info", "kit-good")
    assert (info["status"], info["summary"], info["needs_teacher"], info["needs_real_data"]) == (
        "ok",
        "kit-good: a fake for the kit's tests",
        False,
        False,
    )
    assert info["config"]["scale"]["default"] == 0.1
    assert cli_json("plugins", "info", "kit-registry")["hooks"] == [
        "register_datasets",
        "register_models",
        "register_protocols",
    ]  # a plugin without method_info is a registry plugin, not a method


def test_hook_synthesize(fakes, smoke_workspace):
    result = synthesize_smoke(smoke_workspace, "kit-good", scale=0.0)
    labels = torch.arange(10).repeat_interleave(2)
    pixels = ((labels.float() + 1) / 11).view(-1, 1, 1, 1).expand(-1, 1, 28, 28)
    stored = (pixels * 255).round() / 255  # sets are stored as uint8 pixels, returned as stored
    assert torch.allclose(result.synset.images, smoke_workspace.test.normalize(stored))  # model-input space
    assert torch.equal(result.synset.labels, labels)
    assert result.manifest["config"] == {"scale": 0.0} and result.manifest["synthesis"]["wall_s"] > 0
    with pytest.raises(PluginFailure, match="plugin 'kit-invalid' returned an invalid synthetic set"):
        synthesize_smoke(smoke_workspace, "kit-invalid")  # the core's guard validates every result


def test_hook_register_datasets(fakes, rd3_settings):
    from rd3_harness.data.datasets import open_dataset

    info, train, test = open_dataset(get_plugins().registries.datasets, "kit-tiny", rd3_settings)
    assert (info.num_classes, len(train), len(test), train.channels) == (4, 32, 8, 1)
    listed = {d["name"]: d for d in cli_json("datasets", "list")}
    assert listed["kit-tiny"]["present"] and listed["kit-tiny"]["classes"] == 4


def test_hook_register_models(fakes):
    from rd3_harness.models import create_model

    model = create_model(get_plugins().registries.models, "kit-mlp", num_classes=4, in_channels=1, resolution=8)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    assert cli_json("models", "list", "kit-*") == [{"name": "kit-mlp", "description": "one linear layer (kit tests)"}]


def test_hook_register_protocols(fakes):
    listed = {p["name"]: p for p in cli_json("protocol", "list")}
    assert listed["kit/smoke-copy.v1"]["hash"] == listed["cpu/smoke.v1"]["hash"]  # metadata is not hashed
    assert cli_json("protocol", "show", "kit/smoke-copy.v1")["protocol"]["name"] == "kit/smoke-copy"
