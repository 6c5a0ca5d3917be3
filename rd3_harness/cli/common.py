"""Shared CLI pieces: consoles (messages on stderr, data on stdout), options, runtime settings,
the loaded plugins. Imports no torch: commands import what they need when they run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from rd3_harness.errors import UsageError
from rd3_harness.plugins import Plugins, get_plugins
from rd3_harness.protocol.library import DEFAULT_PROTOCOL
from rd3_harness.registry import Registries
from rd3_harness.settings import Settings

err = Console(stderr=True, soft_wrap=True)
out = Console(width=None if sys.stdout.isatty() else 160)

ProtocolArg = Annotated[str, typer.Argument(help="Protocol file, or registered name (see `rd3h protocol list`).")]
ProtocolOpt = Annotated[
    str | None,
    typer.Option("--protocol", "-p", help=f"Protocol file or registered name (default: {DEFAULT_PROTOCOL})."),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Output folder (results store, synthetic sets) (env RD3_OUT; default ./rd3-results)."
    ),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or auto (env RD3_DEVICE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")]
DownloadOpt = Annotated[
    bool, typer.Option("--download", help="Download a missing dataset (only datasets that allow it).")
]
DataRootOpt = Annotated[
    Path | None, typer.Option("--data-root", help="Dataset folder (env RD3_DATA_ROOT; default RD3_HOME/data).")
]


def plugins() -> Plugins:
    """The installed plugins (loaded once per process)."""
    return get_plugins()


def registries() -> Registries:
    """What the installed plugins registered: datasets, architectures, protocols."""
    return get_plugins().registries


def runtime_settings(
    out_dir: Path | None = None,
    device: str | None = None,
    download: bool = False,
    data_root: Path | None = None,
    **extra: Any,
) -> Settings:
    return Settings().with_(out=out_dir, device=device, download=download or None, data_root=data_root, **extra)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def parse_pairs(pairs: list[str] | None, what: str = "--config") -> dict[str, Any]:
    """`key=value` options; values are read as YAML scalars (numbers, booleans, lists)."""
    from rd3_harness.errors import ProtocolError
    from rd3_harness.protocol.io import parse_document

    result: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {pair!r}: use key=value")
        try:
            result[key.strip()] = parse_document(value, what) if value.strip() else ""
        except ProtocolError as exc:
            raise UsageError(f"{what} {pair!r}: {exc.problems[0]}") from None
    return result


def parse_seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: use comma-separated integers, e.g. 0,1,2") from None


def pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"
