"""Reading and writing protocol documents, and the protocol hash.

YAML goes through a safe loader that also refuses duplicate keys, python tags and alias bombs.
The hash is the sha256 of the canonical JSON of every setting except the metadata fields.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rd3_harness.errors import ProtocolError
from rd3_harness.hashing import sha256_of
from rd3_harness.protocol.schema import METADATA, Protocol, is_added_setting

MAX_DOCUMENT_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_NODES = 100_000


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, bounds aliases and nodes, and reads 1e-3 as a float."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._aliases = 0
        self._nodes = 0

    def compose_node(self, parent, index):  # noqa: ANN001
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases: refused")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise yaml.YAMLError(f"more than {MAX_NODES} nodes: refused")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # noqa: ANN001
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads "1e-3" as a string; read it as the float every author means.
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _expanded_size(data: Any, limit: int) -> int:
    """Nodes of the document with aliases expanded, counting stops past `limit` (alias bombs)."""
    count, stack = 0, [data]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def parse_document(text: str, source: str = "<string>") -> Any:
    """Parse YAML (a superset of JSON) safely; raise ProtocolError with a located message."""
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise ProtocolError(source, [f"document is larger than {MAX_DOCUMENT_BYTES} bytes"])
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split()).replace(' in "<unicode string>",', "")
        if "could not determine a constructor" in message:
            message = "tags such as !!python/object are not allowed: " + message
        raise ProtocolError(source, [f"<document>: {message}"]) from None
    except RecursionError:
        raise ProtocolError(source, ["<document>: nested too deeply"]) from None
    if _expanded_size(data, MAX_NODES) > MAX_NODES:
        raise ProtocolError(source, [f"<document>: more than {MAX_NODES} values once aliases are expanded: refused"])
    return data


def read_document(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProtocolError(str(path), ["<document>: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(str(path), [f"<document>: cannot read: {exc}"]) from None
    return parse_document(text, str(path))


def _field_path(loc: tuple, data: Any) -> str:
    """Dotted path of a pydantic error location, dropping discriminated-union tags."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, (list, tuple)) and item < len(node) else None
            continue
        if isinstance(node, dict) and item not in node and node.get("kind") == item:
            continue  # the union tag pydantic inserts for a discriminated union
        parts.append(("." if parts else "") + str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "<document>"


def validation_problems(exc: ValidationError, data: Any) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{_field_path(err['loc'], data)}: {message}")
    return problems


def parse_protocol(data: Any, source: str = "<string>") -> Protocol:
    if not isinstance(data, dict):
        raise ProtocolError(source, ["<document>: a protocol is a mapping of settings"])
    try:
        return Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(source, validation_problems(exc, data)) from None


def load_protocol(path: str | Path) -> Protocol:
    """Load and validate a protocol file (YAML or JSON)."""
    return parse_protocol(read_document(path), str(path))


def setting_values(protocol: BaseModel) -> dict[str, Any]:
    """Every setting of the protocol as plain JSON data, metadata left out."""
    data = protocol.model_dump(mode="json")
    return {k: v for k, v in data.items() if k not in METADATA}


def hashed_settings(protocol: BaseModel) -> dict[str, Any]:
    """The settings the hash is taken of: `setting_values`, less every field added after the hash
    rule was frozen (declared with `schema.added_setting`) that still holds its default. So a new
    setting leaves every existing protocol's hash as it was until a protocol sets it."""
    data = setting_values(protocol)
    _drop_untouched_additions(protocol, data)
    return data


def _drop_untouched_additions(model: BaseModel, data: dict[str, Any]) -> None:
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if is_added_setting(info) and value == info.get_default(call_default_factory=True):
            data.pop(name, None)
        else:
            _descend(value, data.get(name))


def _descend(value: Any, data: Any) -> None:
    if isinstance(value, BaseModel) and isinstance(data, dict):
        _drop_untouched_additions(value, data)
    elif isinstance(value, (tuple, list)) and isinstance(data, list):
        for v, d in zip(value, data, strict=False):
            _descend(v, d)


def protocol_hash(protocol: Protocol) -> str:
    """The protocol's identity: sha256 of the canonical JSON of its settings (`hashed_settings`)."""
    return sha256_of(hashed_settings(protocol))


def dump_yaml(protocol: Protocol) -> str:
    """The protocol with every default written out, metadata first."""
    data = protocol.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
