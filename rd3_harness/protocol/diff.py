"""Setting-level differences between two protocols."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rd3_harness.protocol.io import setting_values
from rd3_harness.protocol.schema import METADATA, Protocol

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<absent>"})()


def plain(value: Any) -> Any:
    """A setting's value for display and JSON: `MISSING` becomes "<absent>"."""
    return "<absent>" if value is MISSING else value


def value_text(value: Any) -> str:
    """A setting's value as one line of text (strings bare, everything else as JSON)."""
    value = plain(value)
    return value if isinstance(value, str) else json.dumps(value)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": [1, {"c": 2}]}}` -> `{"a.b[0]": 1, "a.b[1].c": 2}`; leaves are JSON scalars.

    Lists of scalars (betas, scale, seeds, milestones) stay whole: they are one setting.
    """
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(data, list) and any(isinstance(v, (dict, list)) for v in data):
        out = {}
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: tuple(data) if isinstance(data, list) else data}


@dataclass(frozen=True)
class Change:
    path: str
    old: Any
    new: Any


def diff_settings(a: Protocol, b: Protocol) -> list[Change]:
    """Every setting whose value differs, in document order of `a` then new paths of `b`."""
    fa, fb = flatten(setting_values(a)), flatten(setting_values(b))
    paths = list(fa) + [p for p in fb if p not in fa]
    return [
        Change(p, fa.get(p, MISSING), fb.get(p, MISSING)) for p in paths if fa.get(p, MISSING) != fb.get(p, MISSING)
    ]


def diff_metadata(a: Protocol, b: Protocol) -> list[Change]:
    return [Change(k, getattr(a, k), getattr(b, k)) for k in sorted(METADATA) if getattr(a, k) != getattr(b, k)]
