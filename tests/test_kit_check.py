"""`check_plugin` and `rd3h plugin check`: every rule of the plugin contract, kept and broken."""

from __future__ import annotations

import json
import re

import pytest
from fake_plugins import install
from typer.testing import CliRunner

from rd3_harness.cli import app
from rd3_harness.testing import ConformanceError, check_plugin

runner = CliRunner()


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    install(monkeypatch, tmp_path / "site")


def problems(name: str, workspace) -> str:
    with pytest.raises(ConformanceError) as failed:
        check_plugin(name, workspace=workspace)
    return str(failed.value)


def test_builtin_random_conforms(smoke_workspace):
    report = check_plugin("random", workspace=smoke_workspace)
    assert report.ok and report.config == {} and len(report.synthesis_s) == 2 and report.notes == []


def test_a_plugin_that_keeps_the_contract_conforms(fakes, smoke_workspace):
    report = check_plugin("kit-good", workspace=smoke_workspace, config={"scale": 0.5})
    assert report.ok and report.config == {"scale": 0.5}
    assert report.notes == ["naming: distribution 'rd3-kit-fakes' does not follow the convention `rd3-plugin-kit-good`"]


def test_argument_not_in_the_spec_is_reported_by_plugins_and_by_the_check(fakes, smoke_workspace):
    listed = {p["name"]: p for p in json.loads(runner.invoke(app, ["plugins", "--json"]).stdout)}
    assert listed["kit-badarg"]["status"] == "broken"
    assert (
        "{'steps'}" in listed["kit-badarg"]["error"]
        and "only arguments named in its spec" in listed["kit-badarg"]["error"]
    )
    text = problems("kit-badarg", smoke_workspace)
    assert (
        "hooks: synthesize(ctx, steps) asks for 'steps', which the hook never passes: its spec is synthesize(ctx)"
        in text
    )
    assert "Remove it" in text


def test_missing_method_info_is_reported_by_plugins_and_by_the_check(fakes, smoke_workspace):
    listed = {p["name"]: p for p in json.loads(runner.invoke(app, ["plugins", "--json"]).stdout)}
    assert (
        "implements synthesize but not method_info: add `@hookimpl def method_info()" in listed["kit-noinfo"]["error"]
    )
    assert "load: `rd3h plugins` marks it broken: implements synthesize but not method_info" in problems(
        "kit-noinfo", smoke_workspace
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("kit-unmarked", "`synthesize` is not decorated with @hookimpl, so the harness never calls it"),
        ("kit-typo", "`synthesise` is marked @hookimpl but no hook has that name; did you mean `synthesize`?"),
        ("kit-loose", "config_model must be frozen"),
        (
            "kit-invalid",
            "synthesize: plugin 'kit-invalid' returned an invalid synthetic set: expected exactly 2 images",
        ),
        ("kit-flaky", "determinism: two syntheses with seed 0 differ (images: 15680 of 15680 values differ"),
        (
            "kit-mixes",
            "device: with ctx.device = meta, synthesize mixes devices: Tensor on device cpu is not on the expected "
            "device meta! (at mixes.py:N in synthesize); create every tensor with device=ctx.device",
        ),
        ("kit-cpuout", "device: with ctx.device = meta, synthesize returned images on cpu; create every tensor with"),
        (
            "kit-devgen",
            "device: randn at devgen.py:N draws on meta (ctx.device) with a cpu generator, which fails on a GPU",
        ),
    ],
)
def test_each_broken_rule_is_reported_with_its_fix(fakes, smoke_workspace, name, expected):
    text = problems(name, smoke_workspace)
    assert expected in re.sub(r"\.py:\d+", ".py:N", text)  # locations name the plugin's line
    assert text.startswith(f"plugin {name!r} fails 1 conformance check(s):")


def test_config_overrides_come_from_smoke_config_and_must_validate(fakes, smoke_workspace, monkeypatch):
    import rd3_kit_fakes.good

    monkeypatch.setattr(rd3_kit_fakes.good, "SMOKE_CONFIG", {"scale": 0.0}, raising=False)
    assert check_plugin("kit-good", workspace=smoke_workspace).config == {"scale": 0.0}
    monkeypatch.setattr(rd3_kit_fakes.good, "SMOKE_CONFIG", {"steps": 3})
    assert "config: SMOKE_CONFIG does not validate: invalid config for kit-good (its keys: scale)" in problems(
        "kit-good", smoke_workspace
    )


def test_unknown_plugin_says_how_to_install(smoke_workspace):
    report = check_plugin("nope", workspace=smoke_workspace, strict=False)
    assert not report.ok and '`nope = "rd3_plugin_nope"`' in report.problems[0]


def test_plugin_check_command(fakes, rd3_settings, monkeypatch):
    monkeypatch.setenv("RD3_HOME", str(rd3_settings.home))
    good = runner.invoke(app, ["plugin", "check", "kit-good", "--json", "--device", "cpu"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.stdout)["ok"] is True
    flaky = runner.invoke(app, ["plugin", "check", "kit-flaky", "--config", "scale=0.2", "--device", "cpu"])
    assert flaky.exit_code == 1
    assert "plugin 'kit-flaky' fails 1 conformance check(s):" in flaky.stdout and "determinism" in flaky.stdout


def test_plugin_check_runs_without_pytest_installed(tmp_path):
    """`rd3h plugin check` in an install without the dev extra: pytest cannot be imported."""
    import subprocess
    import sys

    code = (
        "import sys\nsys.modules['pytest'] = None  # as if not installed\n"
        "from rd3_harness.cli import app\nsys.argv = ['rd3h', 'plugin', 'check', 'random', '--json']\napp()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "RD3_HOME": str(tmp_path / "home"), "RD3_LOAD_PLUGINS": ""}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["ok"] is True
