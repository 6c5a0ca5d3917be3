"""Lifecycle observers: the `run_started`, `epoch_finished`, `evaluation_finished` and
`run_finished` hook implementations of a run, called in isolation.

Each observer gets its own deep copy of the arguments, so it cannot change what the core records;
one that raises is reported by name (a `RuntimeWarning` and a message on stderr) and the run continues.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

HOOKS = ("run_started", "epoch_finished", "evaluation_finished", "run_finished")


@dataclass(frozen=True)
class Observer:
    """One hook implementation: the plugin's name, the function and the arguments it opts into."""

    plugin: str
    hook: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]


@dataclass
class Observers:
    """The observers of one run; `notify(hook, **arguments)` calls each with copies."""

    observers: Sequence[Observer] = ()
    failures: list[str] = field(default_factory=list)

    def wants(self, hook: str) -> bool:
        return any(o.hook == hook for o in self.observers)

    def notify(self, hook: str, **arguments: Any) -> None:
        for o in self.observers:
            if o.hook != hook:
                continue
            try:
                o.function(**{a: copy.deepcopy(arguments[a]) for a in o.argnames})
            except Exception as exc:  # noqa: BLE001 - an observer never breaks the run
                message = f"observer {o.plugin!r} raised in {hook}: {type(exc).__name__}: {exc}; the run continues"
                self.failures.append(message)
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                print(f"warning: {message}", file=sys.stderr)


NONE = Observers()
"""No observers (the default)."""
