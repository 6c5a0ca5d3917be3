"""Plugin discovery, isolation of broken plugins, RD3_LOAD_PLUGINS and plugin selection."""

from __future__ import annotations

import json
import types

import torch
from typer.testing import CliRunner

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_harness.cli import app
from rd3_harness.plugins import Plugins, get_plugins, reset_plugins

runner = CliRunner()


def listing(*args: str) -> dict[str, dict]:
    result = runner.invoke(app, ["plugins", "--json", *args])
    assert result.exit_code == 0, result.output
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_builtin_random_is_listed_with_its_hooks():
    plugins = listing()
    assert plugins["random"]["status"] == "ok"
    assert set(plugins["random"]["hooks"]) == {"method_info", "synthesize"}
    assert "core-datasets" not in plugins and "core-datasets" in listing("--all")


def test_pip_installed_plugin_is_discovered_and_selectable(with_test_plugins):
    plugins = listing()
    mirror = plugins["mirror"]
    assert (mirror["status"], mirror["version"], mirror["distribution"]) == ("ok", "0.3.0", "rd3-plugin-mirror")
    assert get_plugins().method("mirror").method.name == "mirror"


def test_broken_plugins_are_reported_and_isolated(with_test_plugins):
    plugins = listing()
    assert "ImportError: this plugin needs a library" in plugins["crashes"]["error"]
    assert "budget" in plugins["badargs"]["error"]  # argument not in the hookspec
    assert "implements synthesize but not method_info" in plugins["noinfo"]["error"]
    assert plugins["mirror"]["status"] == "ok" and plugins["random"]["status"] == "ok"
    result = runner.invoke(app, ["run", "--plugin", "noinfo", "-p", "cpu/smoke.v1"])
    assert result.exit_code == 2 and "installed but broken" in result.output


def test_load_plugins_env_limits_entry_points(with_test_plugins, monkeypatch):
    monkeypatch.setenv("RD3_LOAD_PLUGINS", "mirror")
    plugins = listing()
    assert "mirror" in plugins and "crashes" not in plugins and "random" in plugins  # built-ins always load
    monkeypatch.setenv("RD3_LOAD_PLUGINS", "")
    reset_plugins()
    assert "mirror" not in listing()


def test_unknown_plugin_lists_installed_methods():
    result = runner.invoke(app, ["run", "--plugin", "nope", "-p", "cpu/smoke.v1"])
    assert result.exit_code == 2
    assert "unknown plugin 'nope'; installed methods:" in result.output and "random" in result.output


def test_method_info_must_match_entry_point_name_and_be_frozen():
    from pydantic import BaseModel

    class Loose(BaseModel):
        steps: int = 1

    def make(name, config):
        module = types.ModuleType("fake")

        @hookimpl
        def method_info():
            return MethodInfo(name=name, summary="x", config_model=config)

        @hookimpl
        def synthesize(ctx):
            return SyntheticSet(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.int64))

        module.method_info, module.synthesize = method_info, synthesize
        return module

    plugins = Plugins(entry_points=False)
    assert "installed as 'alias'" in plugins.add("alias", make("other", Loose)).error
    assert "must be frozen" in plugins.add("loose", make("loose", Loose)).error
    assert set(plugins.methods()) == {"random"}  # broken plugins are unregistered


def test_code_digest_covers_the_whole_package_of_an_entry_module(tmp_path, monkeypatch):
    """A method whose entry point is a submodule (`pkg.d4m`) shares code with its siblings: a
    change to any file of the package must change the synthesis cache key."""
    import importlib

    from rd3_harness.synthesis import code_digest

    pkg = tmp_path / "rd3_plugin_twomethods"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "d4m.py").write_text("from rd3_plugin_twomethods.shared import X\n")
    (pkg / "shared.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    before = code_digest("rd3_plugin_twomethods.d4m")
    assert before and before == code_digest("rd3_plugin_twomethods.shared")
    (pkg / "shared.py").write_text("X = 2\n")
    assert code_digest("rd3_plugin_twomethods.d4m") != before
