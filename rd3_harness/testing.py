"""Test helpers for the core and for plugin authors, registered as a pytest plugin (`pytest11`).

Fixtures: `rd3_settings` (a private output folder and teacher cache for the test session, CPU),
`smoke_protocol` (the few-second protocol), `smoke_workspace` (its data opened, teacher cached on
first use), `smoke_real_data` (the first `SMOKE_IMAGES_PER_CLASS` training images of each class),
`smoke_teacher` (the smoke protocol's teacher) and `smoke_context` (a factory of fresh
`SynthesisContext`s on that slice).

Functions: `synthesize_smoke(workspace, method, **config)` runs one plugin as `rd3h run` does;
`make_context(...)` builds a context by hand; `check_plugin(name)` is the conformance check every
method plugin must pass (see CONTRIBUTING.md, "The plugin kit"). Also re-exported for plugin
tests: `Protocol` (the schema, to derive a variant protocol) and `progress` (a silent reporter).
This module and the package root are the only `rd3_harness` imports a plugin's code and tests use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from torch import nn

from rd3_harness.contract import SynthesisContext
from rd3_harness.data.real import RealData
from rd3_harness.errors import DataMissing
from rd3_harness.kit.conformance import Conformance, ConformanceError, check_plugin, config_problems, hook_problems
from rd3_harness.kit.contexts import (
    SMOKE_CONFIG_ATTRIBUTE,
    SMOKE_IMAGES_PER_CLASS,
    SMOKE_PROTOCOL,
    make_context,
    real_slice,
    synthesize_smoke,
)
from rd3_harness.progress import progress
from rd3_harness.protocol.schema import Protocol
from rd3_harness.settings import Settings

__all__ = [
    "Protocol",
    "SMOKE_CONFIG_ATTRIBUTE",
    "SMOKE_IMAGES_PER_CLASS",
    "SMOKE_PROTOCOL",
    "Conformance",
    "ConformanceError",
    "check_plugin",
    "config_problems",
    "hook_problems",
    "make_context",
    "progress",
    "real_slice",
    "synthesize_smoke",
]


@pytest.fixture(scope="session")
def rd3_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for tests: CPU, a session-private RD3_HOME (teacher cache) and output folder."""
    root = tmp_path_factory.mktemp("rd3")
    return Settings(home=root / "home", out=root / "out", device="cpu", workers=0)


@pytest.fixture(scope="session")
def smoke_protocol():
    from rd3_harness.plugins import get_plugins
    from rd3_harness.protocol.library import resolve_protocol

    protocol, _ = resolve_protocol(get_plugins().registries, SMOKE_PROTOCOL)
    return protocol


@pytest.fixture(scope="session")
def smoke_workspace(rd3_settings: Settings):
    """The smoke protocol with Fashion-MNIST opened (skips when the dataset is not installed)."""
    from rd3_harness.plugins import get_plugins
    from rd3_harness.workspace import open_workspace

    try:
        return open_workspace(get_plugins().registries, SMOKE_PROTOCOL, rd3_settings)
    except DataMissing as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")


@pytest.fixture(scope="session")
def smoke_real_data(smoke_workspace) -> RealData:
    """A small slice of the smoke training set: its first `SMOKE_IMAGES_PER_CLASS` images of each class."""
    return real_slice(smoke_workspace.train, SMOKE_IMAGES_PER_CLASS)


@pytest.fixture(scope="session")
def smoke_teacher(smoke_workspace) -> nn.Module:
    """The smoke protocol's teacher in eval mode: trained on first use (about 20 s on two CPU cores), then cached."""
    return smoke_workspace.teacher(smoke_workspace.protocol.teacher).model


@pytest.fixture
def smoke_context(smoke_workspace, smoke_real_data: RealData, tmp_path: Path):
    """A factory: `smoke_context(config, **options)` is a fresh `SynthesisContext` on `smoke_real_data`
    (seed: the protocol's synthesis seed; options as for `make_context`)."""

    def make(config: BaseModel, **options: Any) -> SynthesisContext:
        options.setdefault("real_data", smoke_real_data)
        return make_context(smoke_workspace, config, workdir=tmp_path / "work", cache_dir=tmp_path / "cache", **options)

    return make
