"""The protocol schema, its files and its hash."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from rd3_harness.cli.protocol import schema_text
from rd3_harness.errors import ProtocolError
from rd3_harness.protocol import diff_settings, dump_yaml, load_protocol, parse_protocol, protocol_hash, setting_values
from rd3_harness.protocol.diff import flatten
from rd3_harness.protocol.io import parse_document

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ROOT / "protocols"
DEFAULT = PROTOCOLS / "cpu" / "fmnist-ipc10.v1.yaml"

# Golden hashes: a change here means published numbers no longer match their protocol file.
GOLDEN = {
    "cpu/fmnist-ipc10.v1": "f931aa27ad59",
    "cpu/fmnist-ipc1.v1": "ef54e867e996",
    "cpu/fmnist-ipc50.v1": "1b92223175d1",
}


def raw(path: Path = DEFAULT) -> dict:
    return yaml.safe_load(path.read_text())


def test_round_trip_keeps_every_setting(tmp_path):
    protocol = load_protocol(DEFAULT)
    written = tmp_path / "p.yaml"
    written.write_text(dump_yaml(protocol))
    again = load_protocol(written)
    assert again == protocol
    assert protocol_hash(again) == protocol_hash(protocol)
    as_json = tmp_path / "p.json"
    as_json.write_text(json.dumps(protocol.model_dump(mode="json")))
    assert load_protocol(as_json) == protocol


def test_hash_ignores_key_order_formatting_defaults_and_metadata(tmp_path):
    base = protocol_hash(load_protocol(DEFAULT))
    data = raw()
    reordered = dict(reversed(list(data.items())))
    reordered["evaluation"] = dict(reversed(list(data["evaluation"].items())))
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump(reordered, default_flow_style=True, width=10_000))
    assert protocol_hash(load_protocol(flow)) == base
    explicit = tmp_path / "defaults.yaml"
    explicit.write_text(dump_yaml(load_protocol(DEFAULT)))  # every default written out
    assert "student_ema: null" in explicit.read_text()
    assert protocol_hash(load_protocol(explicit)) == base
    meta = copy.deepcopy(data)
    meta.update(name="renamed", version="9", description="other words", citation="someone")
    assert protocol_hash(parse_protocol(meta)) == base


def _mutate(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 if value > 0.001 else value + 0.25
    if isinstance(value, tuple):
        return tuple(_mutate(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value)
    return None


def _set(data: dict, path: str, value) -> None:
    import re

    keys = [k for k in re.split(r"\.|\[(\d+)\]", path) if k]
    node = data
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    node[int(last) if last.isdigit() else last] = list(value) if isinstance(value, tuple) else value


def test_every_single_setting_change_changes_the_hash():
    protocol = load_protocol(DEFAULT)
    base = protocol_hash(protocol)
    data = protocol.model_dump(mode="json")
    changed = 0
    for path, value in flatten(setting_values(protocol)).items():
        new = _mutate(value)
        if new is None or new == value:
            continue
        mutated = copy.deepcopy(data)
        _set(mutated, path, new)
        try:
            other = parse_protocol(mutated)
        except ProtocolError:
            continue  # the change is out of bounds (e.g. a probability pushed above 1)
        assert protocol_hash(other) != base, path
        assert [c.path for c in diff_settings(protocol, other)] == [path]
        changed += 1
    assert changed >= 40  # the default protocol has dozens of numeric and boolean settings


@pytest.mark.parametrize("path", sorted(PROTOCOLS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(PROTOCOLS)))
def test_shipped_protocols_validate(path):
    load_protocol(path)


def test_golden_hashes():
    for name, digest in GOLDEN.items():
        assert protocol_hash(load_protocol(PROTOCOLS / f"{name}.yaml"))[:12] == digest, name


SCHEMA_LINE = "# yaml-language-server: $schema="


def shipped_protocol_files() -> list[Path]:
    """protocols/**/*.yaml and every protocol YAML a first-party plugin ships."""
    found = sorted(PROTOCOLS.rglob("*.yaml"))
    for path in sorted((ROOT / "plugins").rglob("*.y*ml")):
        if path.suffix in (".yaml", ".yml") and not {"build", ".venv", "node_modules"} & set(path.parts):
            if "dataset" in (yaml.safe_load(path.read_text()) or {}):
                found.append(path)
    return found


def test_every_shipped_protocol_names_the_schema_for_editors():
    files = shipped_protocol_files()
    assert len(files) >= 50
    schema = PROTOCOLS / "protocol.schema.json"
    for path in files:
        first = path.read_text().splitlines()[0]
        assert first.startswith(SCHEMA_LINE), f"{path}: the first line must be {SCHEMA_LINE}<path to {schema.name}>"
        target = (path.parent / first.removeprefix(SCHEMA_LINE)).resolve()
        assert target == schema.resolve(), f"{path}: {first} does not point at protocols/{schema.name}"


def test_schema_file_is_current():
    assert (PROTOCOLS / "protocol.schema.json").read_text() == schema_text(), (
        "protocols/protocol.schema.json is stale: run `rd3h protocol schema > protocols/protocol.schema.json`"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["evaluation"].update(epoch=3), "evaluation.epoch: Extra inputs are not permitted"),
        (lambda d: d["evaluation"].update(epochs="many"), "evaluation.epochs: Input should be a valid integer"),
        (lambda d: d["evaluation"].update(epochs=-5), "evaluation.epochs: Input should be greater than 0"),
        (lambda d: d["evaluation"]["loss"].update(kind="hinge"), "evaluation.loss: Input tag 'hinge'"),
        (lambda d: d["evaluation"]["augmentation"]["mix"].update(prob=1.5), "evaluation.augmentation.mix.prob"),
        (
            lambda d: d["evaluation"]["loss"].update(temperature=0),
            "evaluation.loss.temperature: Input should be greater",
        ),
        (lambda d: d["evaluation"].update(seeds=[1, 1]), "evaluation: seeds must be distinct"),
        (lambda d: d["evaluation"].update(labels={"kind": "hard"}), "hard labels need loss kind 'ce'"),
    ],
)
def test_invalid_settings_name_the_field(change, message):
    data = raw()
    change(data)
    with pytest.raises(ProtocolError) as info:
        parse_protocol(data)
    assert any(message in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!python/object/apply:os.system ['true']", "tags such as !!python/object are not allowed"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("a: &x [1]\n" + "".join(f"b{i}: *x\n" for i in range(150)), "aliases: refused"),
        (
            "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9)),
            "once aliases are expanded: refused",
        ),
    ],
)
def test_unsafe_yaml_is_refused(text, message):
    with pytest.raises(ProtocolError) as info:
        parse_document(text)
    assert message in info.value.problems[0]


def test_scientific_notation_reads_as_float():
    assert parse_document("lr: 1e-3") == {"lr": 0.001}


FIELDS_V01 = Path(__file__).with_name("protocol_fields_v0.1.txt")


def _schema_fields() -> dict[str, object]:
    import pydantic

    from rd3_harness.protocol import schema

    return {
        f"{name}.{field}": info
        for name, cls in vars(schema).items()
        if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel) and cls.__module__ == schema.__name__
        for field, info in cls.model_fields.items()
    }


def test_fields_added_since_the_hash_rule_froze_are_declared_as_added_settings():
    from rd3_harness.protocol.schema import is_added_setting

    frozen = set(FIELDS_V01.read_text().split())
    new = {k for k, info in _schema_fields().items() if k not in frozen and not is_added_setting(info)}
    assert not new, f"declare new protocol fields with schema.added_setting(default) so no hash changes: {new}"


def test_a_new_setting_with_a_default_leaves_every_existing_hash_unchanged():
    from rd3_harness.protocol.io import hashed_settings, setting_values
    from rd3_harness.protocol.schema import Protocol

    shipped = sorted((Path(__file__).parents[1] / "protocols").rglob("*.yaml"))
    assert len(shipped) >= 50
    # `evaluation.storage_dtype` came after 0.1: at its default "uint8" it is left out of the hash
    for path in shipped:
        p = load_protocol(path)
        assert p.evaluation.storage_dtype == "uint8"
        settings = hashed_settings(p)
        assert "storage_dtype" not in settings["evaluation"], path
        assert settings == _without(setting_values(p), "storage_dtype"), path
        data = p.model_dump(mode="json")
        data["evaluation"]["storage_dtype"] = "float32"
        changed = Protocol.model_validate(data)
        assert protocol_hash(changed) != protocol_hash(p), path
        assert hashed_settings(changed)["evaluation"]["storage_dtype"] == "float32"


def _without(data, key: str):
    """`data` with `key` dropped from every mapping in it."""
    if isinstance(data, dict):
        return {k: _without(v, key) for k, v in data.items() if k != key}
    if isinstance(data, list):
        return [_without(v, key) for v in data]
    return data
