"""The package's shape: layers import one way, no import cycles, first-party plugins stay on the
public API, and commands that train nothing do not import torch."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rd3_harness
from rd3_harness.kit.layers import check, layer_of

PACKAGE = Path(rd3_harness.__file__).parent
ROOT = PACKAGE.parent
PUBLIC_MODULES = {"rd3_harness", "rd3_harness.testing"}


def test_layers_point_one_way_and_nothing_cycles():
    report = check(PACKAGE)
    assert report.ok, "\n".join(report.upward + report.unmapped + [" -> ".join(c) for c in report.cycles])


def test_the_layer_check_catches_an_upward_import_and_a_cycle(tmp_path):
    copy = tmp_path / "rd3_harness"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    models = copy / "models" / "__init__.py"
    models.write_text(models.read_text() + "\n\ndef _bad():\n    from rd3_harness.plugins import get_plugins\n")
    hashing = copy / "hashing.py"
    hashing.write_text(hashing.read_text() + "\nfrom rd3_harness.seeding import derive_seed\n")
    seeding = copy / "seeding.py"
    seeding.write_text(seeding.read_text() + "\nfrom rd3_harness.hashing import sha256_of\n")
    report = check(copy)
    assert any("rd3_harness.models (layer 1) imports rd3_harness.plugins (layer 2)" in u for u in report.upward)
    assert ["rd3_harness.hashing", "rd3_harness.seeding"] in report.cycles
    assert layer_of("rd3_harness.protocol.schema") == 0 and layer_of("rd3_harness.protocol.io") == 1


def _rd3_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rd3_harness":
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rd3_harness"]
    return found


def test_first_party_plugins_import_only_the_public_api():
    files = sorted((ROOT / "plugins").rglob("*.py"))
    assert len(files) > 20
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in files
        for line, module in _rd3_imports(path)
        if module not in PUBLIC_MODULES
    ]
    assert not wrong, "plugins may import only rd3_harness and rd3_harness.testing:\n" + "\n".join(wrong)


def test_every_public_name_resolves():
    from rd3_harness import api

    for name in api.__all__:
        assert getattr(rd3_harness, name) is not None
    with pytest.raises(AttributeError, match="public names"):
        rd3_harness.runner_internals  # noqa: B018


LIGHT_COMMANDS = [
    ["--version"],
    ["--help"],
    ["protocol", "validate", "protocols/cpu/fmnist-ipc10.v1.yaml", "protocols/rd3/imagenet-1k-ipc10.v1.yaml"],
    ["protocol", "list", "--json"],
    ["protocol", "show", "cpu/smoke.v1"],
    ["protocol", "hash", "cpu/smoke.v1"],
    ["protocol", "diff", "cpu/smoke.v1", "cpu/fmnist-ipc10.v1"],
    ["protocol", "schema"],
    ["plugins", "--json"],
    ["datasets", "list"],
    ["models", "list", "resnet*"],
    ["results", "list"],
    ["leaderboard"],
]


@pytest.mark.parametrize("args", LIGHT_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_commands_that_train_nothing_do_not_import_torch(args, tmp_path):
    code = (
        "import sys\n"
        "from rd3_harness.cli import app\n"
        f"sys.argv = ['rd3h', *{json.dumps(args)}]\n"
        "try:\n    app()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "RD3_OUT": str(tmp_path / "out"), "RD3_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().endswith("NO-TORCH"), done.stderr[-2000:]
