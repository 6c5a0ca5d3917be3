"""The frozen evaluation protocol: schema, files, hash and diff."""

from rd3_harness.protocol.diff import Change, diff_metadata, diff_settings
from rd3_harness.protocol.io import (
    canonical_json,
    dump_yaml,
    load_protocol,
    parse_protocol,
    protocol_hash,
    settings,
    short_hash,
)
from rd3_harness.protocol.schema import Protocol

__all__ = [
    "Change",
    "Protocol",
    "canonical_json",
    "diff_metadata",
    "diff_settings",
    "dump_yaml",
    "load_protocol",
    "parse_protocol",
    "protocol_hash",
    "settings",
    "short_hash",
]
