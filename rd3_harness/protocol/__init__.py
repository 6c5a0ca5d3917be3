"""The frozen evaluation protocol: schema, files, hash and diff. No torch at import."""

from rd3_harness.hashing import canonical_json, short_hash
from rd3_harness.protocol.diff import Change, diff_metadata, diff_settings
from rd3_harness.protocol.io import (
    dump_yaml,
    hashed_settings,
    load_protocol,
    parse_protocol,
    protocol_hash,
    setting_values,
)
from rd3_harness.protocol.schema import Protocol

__all__ = [
    "Change",
    "Protocol",
    "canonical_json",
    "diff_metadata",
    "diff_settings",
    "dump_yaml",
    "hashed_settings",
    "load_protocol",
    "parse_protocol",
    "protocol_hash",
    "setting_values",
    "short_hash",
]
