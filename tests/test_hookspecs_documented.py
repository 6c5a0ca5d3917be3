"""Every hookspec is documented in CONTRIBUTING.md with its exact signature and has a test
(`test_hook_<name>` somewhere under tests/), as datasette does for its hooks."""

from __future__ import annotations

import re
from pathlib import Path

import pluggy
import pytest

from rd3_harness import hookspecs

ROOT = Path(__file__).parents[1]
HEADING = re.compile(r"^### (\w+)\((.*)\)$", re.MULTILINE)


def specs() -> dict[str, tuple[str, ...]]:
    pm = pluggy.PluginManager(hookspecs.hookspec.project_name)
    pm.add_hookspecs(hookspecs)
    return {name: tuple(caller.spec.argnames) for name, caller in vars(pm.hook).items()}


def documented() -> dict[str, tuple[str, ...]]:
    """`### name(args)` headings of the '## Hooks' section of CONTRIBUTING.md."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    assert "\n## Hooks\n" in text, "CONTRIBUTING.md needs a '## Hooks' section"
    section = text.split("\n## Hooks\n", 1)[1].split("\n## ", 1)[0]
    return {m[1]: tuple(a.strip() for a in m[2].split(",") if a.strip()) for m in HEADING.finditer(section)}


@pytest.mark.parametrize("hook", sorted(specs()))
def test_hook_is_documented(hook):
    docs, args = documented(), specs()[hook]
    signature = f"### {hook}({', '.join(args)})"
    assert hook in docs, f"CONTRIBUTING.md, '## Hooks': add a section headed `{signature}`"
    assert docs[hook] == args, f"CONTRIBUTING.md documents {hook}{docs[hook]}; the spec is `{signature[4:]}`"


def test_only_hooks_are_documented_as_hooks():
    assert set(documented()) <= set(specs()), "CONTRIBUTING.md documents hooks that hookspecs.py does not have"


@pytest.mark.parametrize("hook", sorted(specs()))
def test_hook_has_a_test(hook):
    test = re.compile(rf"^def test_hook_{hook}\(", re.MULTILINE)
    assert any(test.search(path.read_text()) for path in (ROOT / "tests").rglob("test_*.py")), (
        f"no test exercises the hook {hook!r}: write `def test_hook_{hook}(...)` under tests/"
    )
