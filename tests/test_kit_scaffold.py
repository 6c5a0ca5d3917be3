"""`rd3h plugin new`: names, files, and a generated plugin that installs, passes its tests and runs
with no edits (in-process, and in a fresh virtual environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from fake_plugins import install
from typer.testing import CliRunner

from rd3_harness.cli import app
from rd3_harness.testing import check_plugin

runner = CliRunner()


def new(*args: str):
    return runner.invoke(app, ["plugin", "new", *args])


def test_new_writes_a_plugin_package(tmp_path):
    result = new("my-method", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "rd3-plugin-my-method"
    assert result.stdout.strip() == str(folder)
    assert f"pip install -e {folder}" in result.stderr
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "src/rd3_plugin_my_method/__init__.py",
        "tests/test_rd3_plugin_my_method.py",
    ]
    pyproject = (folder / "pyproject.toml").read_text()
    assert 'name = "rd3-plugin-my-method"' in pyproject
    assert '[project.entry-points.rd3_harness]\nmy-method = "rd3_plugin_my_method"' in pyproject
    module = (folder / "src/rd3_plugin_my_method/__init__.py").read_text()
    assert 'name="my-method"' in module and 'class Config(BaseModel, frozen=True, extra="forbid")' in module


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Foo", "use lowercase letters and digits"),
        ("my_method", "use lowercase letters and digits"),
        ("2fast", "starting with a letter"),
        ("a--b", "single hyphens"),
        ("x" * 41, "at most 40 characters"),
        ("rd3-plugin-foo", "give the method name only, e.g. 'foo'"),
        ("random", "taken by a built-in plugin"),
    ],
)
def test_bad_names_are_refused(tmp_path, name, message):
    result = new(name, "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not list(tmp_path.iterdir())


def test_existing_folder_is_left_alone(tmp_path):
    (tmp_path / "rd3-plugin-foo").mkdir()
    result = new("foo", "--dir", str(tmp_path))
    assert result.exit_code == 2 and "already exists" in result.output


def test_generated_code_is_lint_clean(tmp_path):
    pytest.importorskip("ruff")
    new("foo", "--dir", str(tmp_path))
    folder = tmp_path / "rd3-plugin-foo"
    for command in (["check"], ["format", "--check"]):  # with the rules of its own pyproject.toml
        done = subprocess.run([sys.executable, "-m", "ruff", *command, "."], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_generated_plugin_conforms_unchanged(tmp_path, monkeypatch, smoke_workspace):
    new("kitdemo", "--dir", str(tmp_path))
    src = tmp_path / "rd3-plugin-kitdemo" / "src"
    install(monkeypatch, tmp_path / "site", "rd3-plugin-kitdemo", {"kitdemo": "rd3_plugin_kitdemo"}, src)
    report = check_plugin("kitdemo", workspace=smoke_workspace)
    assert report.ok and report.config == {"images_per_mean": 2} and report.notes == []
    listed = {p["name"]: p for p in json.loads(runner.invoke(app, ["plugins", "--json"]).stdout)}
    assert (listed["kitdemo"]["status"], listed["kitdemo"]["distribution"]) == ("ok", "rd3-plugin-kitdemo")


# ---------------------------------------------------------------- a fresh virtual environment


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    """A new virtual environment that sees the harness (and its dependencies) through a .pth file,
    with `rd3h plugin new foo` pip-installed into it, editable, offline."""
    root = tmp_path_factory.mktemp("fresh")
    env = root / "venv"
    venv.create(env, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)}))
    (site / "rd3_harness_env.pth").write_text(f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    python = str(env / "bin" / "python")
    run = [python, "-m", "rd3_harness", "plugin", "new", "foo", "--dir", str(root)]
    subprocess.run(run, check=True, capture_output=True)
    pip = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "-e", str(root / "rd3-plugin-foo")], check=True, capture_output=True)
    return root, python


def call(fresh_env, *args: str, **env: str) -> subprocess.CompletedProcess:
    root, python = fresh_env
    done = subprocess.run(
        [python, *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "RD3_OUT": str(root / "out"), **env},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_fresh_env_lists_the_new_plugin(fresh_env):
    listed = {p["name"]: p for p in json.loads(call(fresh_env, "-m", "rd3_harness", "plugins", "--json").stdout)}
    assert (listed["foo"]["status"], listed["foo"]["distribution"]) == ("ok", "rd3-plugin-foo")


def test_fresh_env_passes_the_new_plugins_tests(fresh_env):
    result = call(fresh_env, "-m", "pytest", "rd3-plugin-foo", "-q", "-p", "no:cacheprovider")
    assert "2 passed" in result.stdout


def test_fresh_env_runs_the_new_plugin(fresh_env, rd3_settings):
    result = call(
        fresh_env,
        "-m",
        "rd3_harness",
        "run",
        "--plugin",
        "foo",
        "--protocol",
        "cpu/smoke.v1",
        "--device",
        "cpu",
        "--json",
        RD3_HOME=str(rd3_settings.home),
    )
    run = json.loads(result.stdout)
    assert run["run"]["status"] == "complete" and run["run"]["plugin"]["name"] == "foo"
    assert len(run["records"]) == 1 and 0 <= run["records"][0]["top1"] <= 1
    listed = call(fresh_env, "-m", "rd3_harness", "results", "list", "--json").stdout
    assert run["run"]["run_id"] in listed
