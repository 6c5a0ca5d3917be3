"""Shared fixtures for the core's tests (the `rd3_settings`/`smoke_workspace` fixtures come from
the rd3_harness.testing pytest plugin)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rd3_harness.plugins import reset_plugins

PACKAGES = Path(__file__).parent / "packages"


@pytest.fixture(scope="session")
def installed_test_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages under tests/packages, pip-installed into a private folder (not the venv)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            *map(str, sorted(PACKAGES.iterdir())),
        ],
        check=True,
    )
    return target


@pytest.fixture
def with_test_plugins(installed_test_plugins: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the installed test plugins discoverable for one test, then forget them."""
    monkeypatch.syspath_prepend(str(installed_test_plugins))
    reset_plugins()
    yield installed_test_plugins
    reset_plugins()


@pytest.fixture(autouse=True)
def _fresh_plugins():
    yield
    reset_plugins()


@pytest.fixture
def env(rd3_settings, tmp_path, monkeypatch):
    """CLI environment: the session's teacher cache, a private output folder, CPU."""
    monkeypatch.setenv("RD3_HOME", str(rd3_settings.home))
    monkeypatch.setenv("RD3_DEVICE", "cpu")
    monkeypatch.setenv("RD3_OUT", str(tmp_path / "out"))
    return tmp_path / "out"
