"""Progress reporting for long work; the CLI installs a rich renderer, library use stays silent."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
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


def _info(fields: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())


class _RichTask(Task):
    def __init__(self, progress: Any, total: int | None, description: str):
        super().__init__(total, description)
        self._progress = progress
        self._id = progress.add_task(description, total=total, info="")

    def advance(self, n: int = 1, **fields: Any) -> None:
        super().advance(n)
        info = _info(fields)
        self._progress.update(self._id, advance=n, **({"info": info} if info else {}))

    def close(self) -> None:
        self._progress.remove_task(self._id)


class _LineTask(Task):
    """Progress as plain lines for logs (no terminal: nohup, Slurm): every 10 % and at the end."""

    def __init__(self, console: Any, total: int | None, description: str):
        super().__init__(total, description)
        self._console, self._start, self._next, self._fields = console, time.perf_counter(), 0.1, {}

    def advance(self, n: int = 1, **fields: Any) -> None:
        super().advance(n)
        self._fields.update(fields)
        if self.total and self.completed < self.total and self.completed >= self._next * self.total:
            self._next = (int(10 * self.completed / self.total) + 1) / 10
            self._line()

    def close(self) -> None:
        self._line()

    def _line(self) -> None:
        done = f"{self.completed}/{self.total}" if self.total else str(self.completed)
        elapsed = time.perf_counter() - self._start
        self._console.print(
            f"{self.description}: {done} in {elapsed:.0f} s  {_info(self._fields)}".rstrip(),
            highlight=False,
            markup=False,
        )


_factory: Callable[[int | None, str], Task] | None = None


def progress(total: int | None, description: str) -> Task:
    """A progress bar for `total` units of work (None: unknown)."""
    return _factory(total, description) if _factory is not None else Task(total, description)


@contextlib.contextmanager
def rich_progress(console: Any) -> Iterator[None]:
    """Render every `progress()` bar opened inside this block on `console` (stderr): live bars on a
    terminal, plain lines otherwise."""
    global _factory
    previous = _factory
    if not console.is_terminal:
        _factory = lambda total, description: _LineTask(console, total, description)  # noqa: E731
        try:
            yield
        finally:
            _factory = previous
        return
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
    _factory = lambda total, description: _RichTask(bars, total, description)  # noqa: E731
    try:
        with bars:
            yield
    finally:
        _factory = previous
