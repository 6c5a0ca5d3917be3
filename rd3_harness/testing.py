"""Test helpers for the core and for plugin authors, registered as a pytest plugin (`pytest11`).

Fixtures: `rd3_settings` (a private output folder and teacher cache for the test session, CPU),
`smoke_protocol` (the few-second protocol), `smoke_workspace` (its data opened, teacher cached on
first use). `synthesize_smoke(method, **config)` runs one plugin on it.
"""

from __future__ import annotations

import pytest

from rd3_harness.errors import DataMissing
from rd3_harness.settings import Settings

SMOKE_PROTOCOL = "cpu/smoke.v1"


@pytest.fixture(scope="session")
def rd3_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for tests: CPU, a session-private RD3_HOME (teacher cache) and output folder."""
    root = tmp_path_factory.mktemp("rd3")
    return Settings(home=root / "home", out=root / "out", device="cpu", workers=0)


@pytest.fixture(scope="session")
def smoke_protocol():
    from rd3_harness.protocol.library import resolve_protocol

    protocol, _ = resolve_protocol(SMOKE_PROTOCOL)
    return protocol


@pytest.fixture(scope="session")
def smoke_workspace(rd3_settings: Settings):
    """The smoke protocol with Fashion-MNIST opened (skips when the dataset is not installed)."""
    from rd3_harness.runner import open_workspace

    try:
        return open_workspace(SMOKE_PROTOCOL, rd3_settings)
    except DataMissing as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")


def synthesize_smoke(workspace, method: str, *, reuse: bool = False, **config):
    """Run `method` on the smoke workspace; returns the runner's `Synthesized` (set, manifest, folder)."""
    from rd3_harness.runner import synthesize

    return synthesize(workspace, method, config, reuse=reuse)
