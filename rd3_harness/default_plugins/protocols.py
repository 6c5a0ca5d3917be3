"""Built-in protocols: every YAML file under the shipped `protocols/` folder, named by its path
without suffix (`cpu/fmnist-ipc10.v1`)."""

from __future__ import annotations

import sys
from pathlib import Path

from rd3_harness.hookspecs import hookimpl


def shipped_protocols_dir() -> Path | None:
    """The source checkout's `protocols/` (editable installs) or the installed data copy."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "protocols",
        Path(sys.prefix) / "share" / "rd3-harness" / "protocols",
    ):
        if candidate.is_dir():
            return candidate
    return None


@hookimpl
def register_protocols(register):
    root = shipped_protocols_dir()
    if root is None:
        return
    for path in sorted(root.rglob("*.yaml")):
        register(path.relative_to(root).with_suffix("").as_posix(), path)
