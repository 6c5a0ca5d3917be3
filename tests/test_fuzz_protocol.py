"""Property-based: random and mutated protocol documents give validation errors, never a
traceback or a hang."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rd3_harness.errors import ProtocolError
from rd3_harness.protocol import parse_protocol
from rd3_harness.protocol.io import parse_document

BASE = yaml.safe_load((Path(__file__).resolve().parents[1] / "protocols" / "cpu" / "fmnist-ipc10.v1.yaml").read_text())

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, (*prefix, i))


ALL_PATHS = [p for p in paths(BASE) if p]


def parse_only_fails_cleanly(doc) -> None:
    try:
        parse_protocol(doc)
    except ProtocolError as exc:
        assert exc.problems and all(isinstance(p, str) and ": " in p for p in exc.problems)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["set", "delete"]), values), max_size=4))
def test_mutated_protocols_fail_only_with_validation_errors(mutations):
    doc = copy.deepcopy(BASE)
    for path, action, value in mutations:
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            if action == "delete":
                del node[path[-1]]
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    parse_only_fails_cleanly(doc)


@FUZZ
@given(values)
def test_random_documents_fail_only_with_validation_errors(doc):
    parse_only_fails_cleanly(doc)


@FUZZ
@given(st.text(max_size=300))
def test_random_text_parses_or_fails_cleanly(text):
    try:
        doc = parse_document(text)
    except ProtocolError:
        return
    parse_only_fails_cleanly(doc)
