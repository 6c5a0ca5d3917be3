"""Errors the CLI turns into short messages: bad input exits 2, a failed run exits 1."""

from __future__ import annotations


class Rd3Error(Exception):
    """A failure with a message meant for the user; no traceback is shown."""

    exit_code = 1


class UsageError(Rd3Error):
    """Bad input from the user: a protocol, a name, a path or an option. Exit code 2."""

    exit_code = 2


class ProtocolError(UsageError):
    """A protocol document that does not validate; `problems` are `field.path: message` lines."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid protocol\n" + "\n".join(f"  {p}" for p in problems))


class DataMissing(UsageError):
    """A dataset (or teacher file) is not where we looked; the message says how to get it."""


class PluginFailure(Rd3Error):
    """A plugin raised, or returned something the core refuses. Exit code 1."""
