"""Experiment trackers as lifecycle-hook plugins, off unless `rd3h run --log NAME` asks for them.

Each is an optional extra (`pip install 'rd3-harness[tensorboard]'`, `[mlflow]`, `[wandb]`) and
writes under the results folder: `tensorboard/`, `mlflow/` (a local file store), `wandb/` (offline).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from rd3_harness.errors import UsageError

TRACKERS = {
    "tensorboard": ("rd3_harness.trackers.tensorboard", "tensorboard"),
    "mlflow": ("rd3_harness.trackers.mlflow", "mlflow"),
    "wandb": ("rd3_harness.trackers.wandb", "wandb"),
}
"""Tracker name -> (module, the third-party package it needs)."""


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested settings as `a.b.c -> value` strings (lists indexed: `students.0.architecture`)."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return {prefix: str(data)}
    flat: dict[str, str] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def make(names: list[str], folder: Path) -> list[tuple[str, Any]]:
    """(plugin name, tracker object) for each asked-for tracker, writing under `folder`."""
    trackers = []
    for name in dict.fromkeys(names):
        if name not in TRACKERS:
            raise UsageError(f"unknown tracker {name!r} for --log; choose from: {', '.join(TRACKERS)}")
        module, package = TRACKERS[name]
        if importlib.util.find_spec(package) is None:
            raise UsageError(f"--log {name} needs the {package} package: pip install 'rd3-harness[{name}]'")
        trackers.append((f"log-{name}", importlib.import_module(module).Tracker(folder / name)))
    return trackers
