"""`rd3h results verify`: an untouched export passes; an altered protocol, number or synthetic set
is rejected with exit code 1."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rd3_harness import runner as harness
from rd3_harness.cli import app
from rd3_harness.data.synset import load_synset, save_synset
from rd3_harness.plugins import get_plugins
from rd3_harness.protocol import Protocol, protocol_hash
from rd3_harness.protocol.library import resolve_protocol
from rd3_harness.results.store import Store

cli = CliRunner()


@pytest.fixture(scope="module")
def exported(rd3_settings, smoke_workspace, tmp_path_factory) -> dict:
    """A real two-seed run of `random` on a two-epoch smoke variant, exported as reviewers get it."""
    folder = tmp_path_factory.mktemp("verify")
    smoke, _ = resolve_protocol(get_plugins().registries, "cpu/smoke.v1")
    data = smoke.model_dump(mode="json")
    data["evaluation"].update(epochs=2, seeds=[0, 1])
    protocol = folder / "tiny.yaml"
    protocol.write_text(yaml.safe_dump(data))
    settings = replace(rd3_settings, out=folder / "out")
    outcome = harness.run(get_plugins(), "random", protocol, settings=settings)
    doc = Store.in_folder(settings.out).export(outcome.run.run_id)
    return {"doc": doc, "protocol": str(protocol), "synset": Path(doc["run"]["synset"]["path"]), "folder": folder}


def verify(tmp_path: Path, doc: dict, *args: str):
    path = tmp_path / "record.json"
    path.write_text(json.dumps(doc))
    return cli.invoke(app, ["results", "verify", str(path), *args])


def test_untouched_export_is_verified(exported, tmp_path):
    result = verify(tmp_path, exported["doc"], "--protocol", exported["protocol"], "--synset", str(exported["synset"]))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("VERIFIED") and "FAIL" not in result.stdout
    as_json = verify(tmp_path, exported["doc"], "--json")
    assert json.loads(as_json.stdout)["verified"] is True


def test_altered_protocol_is_rejected(exported, tmp_path):
    doc = copy.deepcopy(exported["doc"])
    doc["run"]["protocol"]["evaluation"]["epochs"] = 400
    result = verify(tmp_path, doc)
    assert result.exit_code == 1 and "FAIL protocol hash" in result.stdout
    # a consistent forgery (hash recomputed everywhere) still differs from the named protocol
    forged = Protocol.model_validate(doc["run"]["protocol"])
    h = protocol_hash(forged)
    doc["run"]["protocol_hash"] = h
    for r in doc["records"]:
        r["protocol_hash"] = h
    result = verify(tmp_path, doc, "--protocol", exported["protocol"])
    assert result.exit_code == 1, result.output
    assert "FAIL named protocol" in result.stdout and "evaluation.epochs: named 2, record 400" in result.stdout


def test_altered_numbers_are_rejected(exported, tmp_path):
    doc = copy.deepcopy(exported["doc"])
    doc["records"][0]["top1"] += 0.05
    doc["records"][0]["final_top1"] += 0.05
    result = verify(tmp_path, doc)
    assert result.exit_code == 1 and "FAIL per-seed numbers vs summary" in result.stdout
    doc = copy.deepcopy(exported["doc"])
    doc["run"]["summary"][0]["mean"] += 0.01
    assert "FAIL per-seed numbers vs summary" in verify(tmp_path, doc).stdout
    doc = copy.deepcopy(exported["doc"])
    doc["records"] = doc["records"][:1]
    result = verify(tmp_path, doc)
    assert result.exit_code == 1 and "missing convnet_d1_w32_bn seed 1" in result.stdout
    doc = copy.deepcopy(exported["doc"])
    doc["records"][1]["protocol_hash"] = "0" * 64
    assert "FAIL records match the run" in verify(tmp_path, doc).stdout


def test_altered_synthetic_set_is_rejected(exported, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(exported["synset"], tampered)
    blob = bytearray((tampered / "images.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (tampered / "images.safetensors").write_bytes(bytes(blob))
    result = verify(tmp_path, exported["doc"], "--synset", str(tampered))
    assert result.exit_code == 1 and "FAIL synthetic set" in result.stdout and "does not match" in result.stdout
    synset, manifest = load_synset(exported["synset"])
    synset.images = synset.images + 0.01 * torch.ones_like(synset.images)  # another, self-consistent set
    other = tmp_path / "other"
    info = {k: manifest[k] for k in ("method", "dataset", "ipc", "num_classes")}
    save_synset(other, synset, info, normalization=manifest["normalization"])
    result = verify(tmp_path, exported["doc"], "--synset", str(other))
    assert result.exit_code == 1 and "the run used" in result.stdout


def test_unreadable_input_exits_2(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("not json")
    assert cli.invoke(app, ["results", "verify", str(path)]).exit_code == 2
    path.write_text("[]")
    result = cli.invoke(app, ["results", "verify", str(path)])
    assert result.exit_code == 2 and "export one" in result.output
