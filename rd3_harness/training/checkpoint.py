"""Training checkpoints: saved atomically every N epochs with a sha256 of their payload, loaded
with `weights_only=True`, so a killed evaluation resumes from its last checkpoint and ends with the
same numbers; a torn or damaged checkpoint is discarded (one warning) and its epochs trained again."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import torch

from rd3_harness.files import atomic_write

log = logging.getLogger(__name__)
MAGIC = b"rd3-ckpt/1\n"


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
        data = path.read_bytes()
        head, digest, payload = data[: len(MAGIC)], data[len(MAGIC) : len(MAGIC) + 32], data[len(MAGIC) + 32 :]
        if head != MAGIC or hashlib.sha256(payload).digest() != digest:
            log.warning("checkpoint %s is truncated or damaged; discarded, its epochs are trained again", path)
            path.unlink(missing_ok=True)
            return None
        state = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
        return state if state.get("students_order") == students else None

    def save(self, seed: int, students: list[str], state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save({**state, "students_order": students}, buffer)
        payload = buffer.getvalue()
        atomic_write(
            self.path(seed, students), lambda p: p.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)
        )

    def clear(self, seed: int, students: list[str]) -> None:
        self.path(seed, students).unlink(missing_ok=True)
