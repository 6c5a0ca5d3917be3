"""Progress reporting for long work; the CLI installs a rich renderer, library use stays silent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Task:
    """One progress bar. Use as a context manager; call `advance(n)` as work completes."""

    def __init__(self, total: int | None, description: str):
        self.total = total
        self.description = description
        self.completed = 0

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.completed += n

    def close(self) -> None:
        pass

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RichTask(Task):
    def __init__(self, progress: Any, total: int | None, description: str):
        super().__init__(total, description)
        self._progress = progress
        self._id = progress.add_task(description, total=total, info="")

    def advance(self, n: int = 1, **fields: Any) -> None:
        super().advance(n)
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self._progress.update(self._id, advance=n, **({"info": info} if info else {}))

    def close(self) -> None:
        self._progress.remove_task(self._id)


_rich: Any = None


def progress(total: int | None, description: str) -> Task:
    """A progress bar for `total` units of work (None: unknown)."""
    return _RichTask(_rich, total, description) if _rich is not None else Task(total, description)


@contextlib.contextmanager
def rich_progress(console: Any) -> Iterator[None]:
    """Render every `progress()` bar opened inside this block on `console` (stderr)."""
    global _rich
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=True,
    )
    previous, _rich = _rich, bars
    try:
        with bars:
            yield
    finally:
        _rich = previous
