"""`rd3h protocol ...` from the command line: exit codes, messages, data on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from rd3_harness.cli import app

DEFAULT = Path(__file__).resolve().parents[1] / "protocols" / "cpu" / "fmnist-ipc10.v1.yaml"
runner = CliRunner()


def write(tmp_path: Path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_validate_every_shipped_protocol():
    listed = json.loads(invoke("protocol", "list", "--json").stdout)
    assert {"cpu/fmnist-ipc10.v1", "cpu/smoke.v1"} <= {p["name"] for p in listed}
    result = invoke("protocol", "validate", *[p["name"] for p in listed])
    assert result.exit_code == 0, result.output


def test_invalid_files_exit_2_with_field_messages(tmp_path):
    base = yaml.safe_load(DEFAULT.read_text())
    cases = {
        "unknown_key.yaml": ({**base, "colour": "red"}, "colour: Extra inputs are not permitted"),
        "wrong_type.yaml": ({**base, "ipc": "ten"}, "ipc: Input should be a valid integer"),
        "negative.yaml": (
            {**base, "evaluation": {**base["evaluation"], "epochs": -1}},
            "evaluation.epochs: Input should be greater than 0",
        ),
        "kind.yaml": (
            {**base, "evaluation": {**base["evaluation"], "labels": {"kind": "magic"}}},
            "evaluation.labels: Input tag 'magic'",
        ),
        "tag.yaml": (
            "name: x\nipc: !!python/object/apply:os.system ['echo pwned']\n",
            "tags such as !!python/object are not allowed",
        ),
        "arch.yaml": (
            {**base, "evaluation": {**base["evaluation"], "students": [{"architecture": "resnet9000"}]}},
            "evaluation.students[0].architecture: unknown architecture 'resnet9000'",
        ),
    }
    for name, (data, message) in cases.items():
        result = invoke("protocol", "validate", write(tmp_path, name, data))
        assert result.exit_code == 2, (name, result.output)
        assert message in result.output, (name, result.output)
        assert "Traceback" not in result.output


def test_hash_agrees_across_formatting_and_metadata_and_differs_after_a_change(tmp_path):
    base = yaml.safe_load(DEFAULT.read_text())
    a = write(tmp_path, "a.yaml", DEFAULT.read_text())
    b = write(
        tmp_path,
        "b.yaml",
        yaml.safe_dump(
            {**dict(reversed(list(base.items()))), "name": "other", "description": "x"}, default_flow_style=True
        ),
    )
    changed = {**base, "evaluation": {**base["evaluation"], "batch_size": 64}}
    c = write(tmp_path, "c.yaml", changed)
    hashes = [row["hash"] for row in json.loads(invoke("protocol", "hash", a, b, c, "--json").stdout)]
    assert hashes[0] == hashes[1] != hashes[2]
    plain = invoke("protocol", "hash", a)
    assert plain.stdout.split()[0] == hashes[0]


def test_diff_lists_settings_or_says_identical(tmp_path):
    base = yaml.safe_load(DEFAULT.read_text())
    other = {**base, "name": "renamed"}
    same = invoke("protocol", "diff", str(DEFAULT), write(tmp_path, "same.yaml", other))
    assert same.exit_code == 0
    assert "settings are identical" in same.output and "only metadata differs: name" in same.output
    changed = {
        **base,
        "ipc": 50,
        "evaluation": {**base["evaluation"], "epochs": 300, "loss": {"kind": "kl", "temperature": 4}},
    }
    result = invoke("protocol", "diff", str(DEFAULT), write(tmp_path, "changed.yaml", changed), "--json")
    paths = {row["path"]: (row["a"], row["b"]) for row in json.loads(result.stdout)["settings"]}
    assert paths == {"ipc": (10, 50), "evaluation.epochs": (400, 300), "evaluation.loss.temperature": (20.0, 4.0)}


def test_show_writes_every_default():
    result = invoke("protocol", "show", "cpu/smoke.v1")
    assert result.exit_code == 0
    assert "student_ema: null" in result.stdout and "no_decay_1d: false" in result.stdout


def test_unknown_protocol_name_suggests():
    result = invoke("protocol", "show", "cpu/fmnist-ipc10")
    assert result.exit_code == 2
    assert "cpu/fmnist-ipc10.v1" in result.output
