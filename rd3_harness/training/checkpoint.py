"""Training checkpoints: saved atomically every N epochs, loaded with `weights_only=True`, so a
killed evaluation resumes from its last checkpoint and ends with the same numbers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from rd3_harness.files import atomic_write


class Checkpoints:
    """One file per (seed, lockstep group of students) under `folder`."""

    def __init__(self, folder: Path, every: int):
        self.folder, self.every = Path(folder), every

    def path(self, seed: int, students: list[str]) -> Path:
        key = hashlib.sha256(",".join(students).encode()).hexdigest()[:12]
        return self.folder / f"seed{seed}-{key}.pt"

    def due(self, epochs_done: int, total: int) -> bool:
        return self.every > 0 and epochs_done % self.every == 0 and epochs_done < total

    def load(self, seed: int, students: list[str], device: torch.device) -> dict[str, Any] | None:
        path = self.path(seed, students)
        if not path.is_file():
            return None
        state = torch.load(path, map_location=device, weights_only=True)
        return state if state.get("students_order") == students else None

    def save(self, seed: int, students: list[str], state: dict[str, Any]) -> None:
        atomic_write(self.path(seed, students), lambda p: torch.save({**state, "students_order": students}, p))

    def clear(self, seed: int, students: list[str]) -> None:
        self.path(seed, students).unlink(missing_ok=True)
