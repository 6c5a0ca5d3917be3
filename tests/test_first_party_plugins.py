"""Every first-party plugin (installed from a folder under plugins/) passes `check_plugin`, with the
config overrides of its module's `SMOKE_CONFIG` (CONTRIBUTING.md, "Keep it fast to check")."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from rd3_harness.plugins import ENTRY_POINT_GROUP
from rd3_harness.testing import check_plugin

PLUGINS = (Path(__file__).parents[1] / "plugins").resolve()


def source(dist: importlib.metadata.Distribution) -> Path | None:
    """The local folder a distribution was pip-installed from (editable or not), if any."""
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    return Path(unquote(urlparse(url).path)).resolve() if url.startswith("file:") else None


def first_party() -> dict[str, Path]:
    """Entry-point name -> source folder, for the plugins installed from under plugins/."""
    found = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        folder = source(ep.dist) if ep.dist is not None else None
        if folder is not None and folder.is_relative_to(PLUGINS):
            found[ep.name] = folder
    return found


FIRST_PARTY = first_party()


@pytest.mark.parametrize("name", sorted(FIRST_PARTY))
def test_first_party_plugin_conforms(name, smoke_workspace):
    check_plugin(name, workspace=smoke_workspace)


@pytest.mark.parametrize("folder", sorted(p.parent for p in PLUGINS.glob("*/pyproject.toml")), ids=lambda p: p.name)
def test_every_plugin_folder_is_installed(folder):
    assert folder in FIRST_PARTY.values(), (
        f"{folder.name} is not installed, so its conformance is not checked: `make install` "
        f"(or `pip install -e {folder.relative_to(PLUGINS.parent)}`)"
    )
